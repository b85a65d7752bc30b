"""`python -m ccql_utils COMMAND ...`: the command line over the functions the notebooks call.

Its commands are listed in docs/usage.md and by `--help`. Exit codes: 0 done, 1 data or runtime
error (one line), 2 invalid arguments (one line naming the option), 3 a run diverged (the line
names the run and its LR), 130 interrupted (rerun the same command to resume).
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from . import remote
from .options import (Parser, _ints, _floats, _lr, _names, add_config_arguments, add_executor_arguments,
                      add_override_arguments, add_store_arguments, command, config_from_args, context,
                      load_loss_modules, report_diverged)
from ..core.config import resolve_device
from ..core.data import DataError
from ..core.train import RunError
from ..execution.scheduler import ExecutorError, obtain
from ..execution.sweep import TOLERANCE
from ..figures.figure import RUN_PARAMETERS
from ..figures.notebooks import NotebookFailed
from ..figures.presets import EXPERIMENTS, OVERRIDES, PRESETS, get_preset, resolve_preset
from ..figures.registry import FIGURES, TRAINING_FIGURES, figure_of_notebook
from ..provenance import PROJECT_ROOT, atomic_write_text


def overrides(args) -> dict:
    """The preset overrides given on the command line (device is the context's)."""
    return {name: getattr(args, name) for name in OVERRIDES
            if name != "device" and getattr(args, name, None) is not None}


def cmd_train(args) -> int:
    config = config_from_args(args)  # before the context: an invalid option is named first
    run = obtain(context(args), {"run": config}, "train")["run"]
    final = run.final()
    if final:
        print(f"{run.describe()}: {len(run.history)} epochs; final train acc {final['train_acc']:.4f}, "
              f"test acc {final['test_acc']:.4f}, test loss (normalized) "
              f"{final['test_loss_norm']:.4f}", file=sys.stderr)
    print(run.run_dir)
    return report_diverged({run.run_dir.name: run.describe()} if run.diverged else {}, "--lr")


def cmd_run(args) -> int:
    import pandas as pd
    figure = FIGURES[args.figure]
    resolve_device(args.device or "auto")  # also when every run is stored: a bad value is still a bad argument
    draws = {"class_seeds": args.class_seeds} if args.class_seeds else {}
    if args.losses:
        if "losses" not in figure.parameters:
            raise ValueError(f"--losses: the {figure.name} figure takes no list of losses")
        draws["losses"] = args.losses
    result = figure.run(ctx=context(args), preset=args.preset, seed=args.seed, seeds=args.seeds,
                        **overrides(args), **draws)
    table = result.table().drop(columns="paper reports (WRN-28-10, 200 epochs)", errors="ignore")
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False))
    if result.missing():
        print(f"error: {len(result.missing())} run(s) not trained: {', '.join(result.missing())}",
              file=sys.stderr)
        return 1
    return report_diverged(result.diverged(), "--lr loss=value")


def cmd_sweep_lr(args) -> int:
    import pandas as pd
    from ..figures.presets import experiment_configs
    from ..execution.sweep import sweep_lr
    if args.experiment:
        configs = [c for c in experiment_configs(args.experiment, args.preset, seed=getattr(args, "seed", 0),
                                                 device=getattr(args, "device", None),
                                                 **overrides(args)).values()
                   if not args.losses or c.loss in args.losses]
    else:
        configs = [config_from_args(args)]
    ctx = context(args)
    table = pd.concat([sweep_lr(c, args.lrs, ctx, tolerance=args.tolerance) for c in configs],
                      ignore_index=True)
    print(table.drop(columns="run_dir").to_string(index=False))
    if args.output:
        atomic_write_text(Path(args.output), table.to_csv(index=False))
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_notebook(args) -> int:
    from ..figures.notebooks import execute_notebook, parse_parameter, trains
    parameters = {name: parse_parameter(value) for name, value in args.parameter}
    # a path given is relative to where the command runs, not to the notebook's folder
    for name in ("data_root", "runs_dir", "figures_dir"):
        if isinstance(parameters.get(name), str):
            parameters[name] = str(Path(parameters[name]).expanduser().resolve())
    if trains(args.path):
        parameters.setdefault("progress", "lines")  # headless: a line per epoch, no bars
    output = args.output or str(Path("outputs") / Path(args.path).name)
    execute_notebook(args.path, output, parameters, prepare_only=args.prepare_only,
                     log_output=not args.quiet)
    print(output)
    return 0


def cmd_all(args) -> int:
    """What run_all.sh does: every notebook at one preset, then the summary."""
    from ..figures.notebook_parameters import NOTEBOOKS_DIR
    from ..figures.notebooks import execute_notebook
    if args.data_root is not None and not Path(args.data_root).exists():
        raise ValueError(f"--data-root {args.data_root} does not exist")
    resolve_device(args.device)
    preset = resolve_preset(args.preset, args.device)
    if args.preset == "auto":
        print(f"[all] preset auto -> {preset} ({get_preset(preset).description})")
    ctx = context(args)
    figures_dir, out_dir = ctx.figures_for(preset), PROJECT_ROOT / "outputs" / preset
    notebooks = [p for p in sorted(NOTEBOOKS_DIR.glob("*.ipynb")) if args.only in p.name]
    if not notebooks:
        raise ValueError(f"--only {args.only!r} matches no notebook in {NOTEBOOKS_DIR}")
    figures = [figure_of_notebook(p) for p in notebooks]
    if args.executor != "local":  # every run in one call, so that a cluster trains them side by side
        trained = [f for f in figures if f.trains and f.name in EXPERIMENTS]
        configs = {}
        for figure in trained:
            *_, own_configs = figure.prepare(preset=preset, seeds=args.seeds, device=args.device, lr=args.lr)
            for c in own_configs.values():
                configs.setdefault(c.run_id(), c)  # a run two figures share (Fig 3's and Fig 1's) once
        print(f"[all] training the {len(configs)} run(s) of {len(trained)} figure(s) at once "
              f"(executor {args.executor})", flush=True)
        obtain(ctx, configs, "all")
    given = dict(preset=preset, device=args.device, runs_dir=str(ctx.runs_dir), progress="lines",
                 data_root=None if ctx.data_root is None else str(ctx.data_root), lr=args.lr,
                 seeds=args.seeds, class_seeds=args.class_seeds,
                 verify_data=False if args.unverified_data else None,
                 executor=args.executor, address=args.address, runs_per_gpu=args.runs_per_gpu)
    diverged, start = {}, time.time()
    for path, figure in zip(notebooks, figures):
        # the theory notebook takes none of the run parameters
        parameters = {"figures_dir": str(figures_dir),
                      **{k: v for k, v in given.items() if v is not None and k in figure.parameters}}
        print(f"[all] {time.strftime('%H:%M:%S')} {path.name} (preset {preset}) -> {out_dir / path.name}",
              flush=True)
        t0 = time.time()
        execute_notebook(path, out_dir / path.name, parameters, log_output=not args.quiet)
        print(f"[all] {path.name} done in {time.time() - t0:.0f} s", flush=True)
        if figure.trains:
            record = figures_dir / f"{figure.stem}_{preset}.provenance.json"
            runs = json.loads(record.read_text())["parameters"]["runs"]
            diverged.update({f"{label} of {path.name}": f"diverged at epoch {r['diverged_epoch']} "
                             f"(lr {r['config']['lr']})" for label, r in runs.items()
                             if r["state"] == "diverged"})
    print(f"\n[all] finished {len(notebooks)} notebook(s) in {time.time() - start:.0f} s "
          f"(preset {preset}). Figures:")
    summarise(figures_dir, ctx.runs_dir, preset)
    return report_diverged(diverged, "rerun with --lr loss=value, e.g. a third of it")


def summarise(figures_dir: Path, runs_dir: Path, preset: str | None = None) -> int:
    """Each figure's path (from its provenance record) and each run's state and final test accuracy."""
    from ..execution.store import load_run
    records = [(p, json.loads(p.read_text())) for p in sorted(Path(figures_dir).glob("*.provenance.json"))]
    records = [(p, r) for p, r in records if not preset or r["parameters"].get("preset", preset) == preset]
    if not records:
        print(f"no figures in {figures_dir}", file=sys.stderr)
        return 1
    for path, record in records:
        env = record["environment"]
        print(f"{path.with_name(record['figure'] + '.png')}  [{env['date_utc']}, commit {env['commit'][:12]}]")
        for label, run in record["parameters"].get("runs", {}).items():
            stored = load_run(runs_dir / run["run_id"])
            final = stored.final()
            acc = f"{final['test_acc']:.4f}" if final else "n/a (run not in this runs folder)"
            print(f"    {label:<20} {stored.describe() if final else run['state']:<30} "
                  f"{run['epochs_completed']:>3} epochs  final test acc {acc}")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="python -m ccql_utils", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = command(sub, "train", cmd_train, "train (or resume, or read back) one run")
    add_config_arguments(p)
    add_store_arguments(p)

    run = command(sub, "run", cmd_run, "every run of one figure, and its table; no papermill")
    run.add_argument("figure", choices=TRAINING_FIGURES)
    run.add_argument("--seed", type=int, default=RUN_PARAMETERS["seed"][0], help=RUN_PARAMETERS["seed"][1])
    run.add_argument("--losses", type=_names, default=None,
                     help="loss_zoo: the losses to compare, e.g. ce,focal,my_loss (with --loss-module)")
    add_override_arguments(run)
    every = command(sub, "all", cmd_all, "execute every notebook at one preset (what run_all.sh runs)")
    every.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    every.add_argument("--only", default="", help="only notebooks whose file name contains this")
    every.add_argument("--lr", type=_lr, default=None,
                       help="override the preset's LRs, e.g. ql=0.01 (the fix for a diverged run)")
    for p in (run, every):
        p.add_argument("--preset", default=RUN_PARAMETERS["preset"][0], choices=(*PRESETS, "auto"),
                       help=RUN_PARAMETERS["preset"][1])
        p.add_argument("--seeds", type=_ints, default=None,
                       help="several seeds, e.g. 0,1,2: mean +- sd over them (the classes: the first's)")
        p.add_argument("--class-seeds", type=_ints, default=None,
                       help="random-class draws, e.g. 0,1,2 (the first: the seeds' own draw; Figs 1-3)")
        add_store_arguments(p)
        add_executor_arguments(p)

    p = command(sub, "notebook", cmd_notebook,
                "execute a notebook with papermill (unknown parameters are errors)")
    p.add_argument("path")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="VALUE is JSON if it parses, else a string")
    p.add_argument("--output", default=None, help="executed copy (default outputs/NAME)")
    p.add_argument("--prepare-only", action="store_true", help="inject parameters, do not run")
    p.add_argument("--quiet", action="store_true", help="do not echo cell output")

    p = command(sub, "summary", lambda args: summarise(args.figures_dir, context(args).runs_dir, args.preset),
                "figures and the final test accuracy of their runs")
    p.add_argument("--figures-dir", type=Path, default=PROJECT_ROOT / "figures",
                   help="default: figures/ in the repository")
    p.add_argument("--preset", default=None, help="only figures of this preset")
    add_store_arguments(p, data=False)

    p = command(sub, "sweep-lr", cmd_sweep_lr, "short runs over a grid of initial LRs; best by test accuracy",
                description="Either one run configuration (the train options) or a preset "
                            "experiment's runs (--experiment, --preset) with overrides.")
    p.add_argument("--lrs", type=_floats, required=True, help="e.g. 0.01,0.03,0.1,0.3")
    p.add_argument("--experiment", choices=EXPERIMENTS, help="the runs of one of the paper's figures")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--losses", type=_names, default=None, help="with --experiment: only these, e.g. ce,ql")
    p.add_argument("--tolerance", type=float, default=TOLERANCE,
                   help=f"best = the smallest LR within this much test accuracy of the top (default {TOLERANCE})")
    p.add_argument("--output", default=None, help="write the table as CSV here")
    add_config_arguments(p)
    add_store_arguments(p)
    add_executor_arguments(p)

    remote.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        load_loss_modules(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"python -m ccql_utils: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    # SIGTERM takes Ctrl-C's path (KeyboardInterrupt): the run is marked and resumable
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return args.func(args)
    except ValueError as exc:  # invalid values that only the configuration can judge
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    except (DataError, RunError, ExecutorError, NotebookFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a file where a folder belongs, no permission
        print(f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # the run store's RunInterrupted says from which epoch
        print(str(exc) or "interrupted: rerun the same command to resume where it stopped",
              file=sys.stderr)
        return 130
    except Exception as exc:
        if type(exc).__name__ != "OutOfMemoryError":  # torch's, named so that torch is not imported here
            raise
        print(f"error: out of GPU memory ({exc}); lower --batch-size or free the GPU", file=sys.stderr)
        return 1
