"""`python -m ccql_utils COMMAND ...`: the command line over the functions the notebooks call.

    train      one run (trained, resumed or read back)    run       one experiment's runs, no papermill
    all        every notebook, i.e. every figure           notebook  one notebook with papermill
    sweep-lr   short runs over a grid of LRs               summary   the figures and their runs
    export     run records (no checkpoints) to a folder or .tar.gz    import  such records into a runs folder
    pack       a class subset as one .npz or a folder of parts         verify-pack  check one
    plan       the queue's next GPU runs that fit a budget            lease   train them (scripts/gpu_lease.sh)

Exit codes: 0 done, 1 data or runtime error (one line), 2 invalid arguments (one line naming the
option), 3 a run diverged (the line names the run and its LR), 130 interrupted (rerun the same
command to resume).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from pathlib import Path

from .config import COMPILE_MODES, PRECISIONS, TrainConfig, resolve_device
from .data import SUBSET_KINDS, DataError
from .losses import LOSS_NAMES
from .presets import EXPERIMENTS, OVERRIDES, PRESETS, get_preset, resolve_preset
from .provenance import PROJECT_ROOT, atomic_write_text
from .scheduler import ExecutorError
from .train import RunError

EXIT_DIVERGED = 3


class Parser(argparse.ArgumentParser):
    """Invalid arguments: one line naming the option, exit 2 (argparse adds a usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _classes(text: str):
    """'random' | 'all' | 'mammals' | comma-separated class names."""
    return text if text in SUBSET_KINDS else [n.strip() for n in text.split(",") if n.strip()]


def _list_of(convert, what: str):
    """An argparse type: comma-separated values of `convert` (at least one), e.g. 0.01,0.03."""
    def parse(text: str) -> list:
        items = [x.strip() for x in text.split(",")]
        if not any(items):
            raise argparse.ArgumentTypeError(f"expected at least one {what}, got {text!r}")
        if not all(items):
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}s without empty items, got {text!r}")
        try:
            return [convert(x) for x in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}s, got {text!r}") from None
    return parse


_floats, _ints = _list_of(float, "number"), _list_of(int, "integer")


def _lr(text: str):
    """'0.1' (every loss) or 'ql=0.03,ccql=0.02'."""
    if "=" not in text:
        return float(text)
    try:
        pairs = [(k.strip(), float(v)) for k, v in (item.split("=") for item in text.split(","))]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or loss=lr pairs, got {text!r}") from None
    repeated = sorted({k for k, _ in pairs if [p for p, _ in pairs].count(k) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"each loss once, got {', '.join(repeated)} twice in {text!r}")
    return dict(pairs)


# --------------------------------------------------------------------- options derived from TrainConfig
ALIASES = {"num_classes": ["--k"], "lr_milestones": ["--milestones"]}
SPECIAL_TYPES = {"classes": _classes, "lr_milestones": _floats, "num_classes": int,
                 "class_seed": int, "train_per_class": int, "test_per_class": int}
CHOICES = {"loss": LOSS_NAMES, "precision": PRECISIONS}
HELP = {"classes": "random | all | mammals | comma-separated CIFAR-100 class names",
        "num_classes": "number of classes K (required with --classes random)",
        "class_seed": "seed of the random class draw (default: --seed)",
        "train_per_class": "training images per class, 1-500 (default: all)",
        "test_per_class": "test images per class, 1-100 (default: all)",
        "width": "widen factor", "lr": "initial learning rate",
        "lr_milestones": "LR drops as fractions of the run", "seed": "model init and data order",
        "clean_train_eval": "also evaluate the un-augmented training set in eval mode: every epoch, "
                            "or every N epochs and the last with --clean-train-eval N",
        "device": "auto | cpu | cuda | cuda:N", "compile": f"torch.compile the model; a mode: {', '.join(COMPILE_MODES)}",
        "checkpoint_every": "epochs between checkpoints"}
NOT_OPTIONS = ("loss_options", "dataset")  # set through --w/--rs-k/--rs-m and the data


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field; an option not given keeps the field's default."""
    defaults = TrainConfig()
    group = parser.add_argument_group("run configuration (defaults: the paper's protocol)")
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_OPTIONS:
            continue
        default = getattr(defaults, f.name)
        flags = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
        help_text = f"{HELP.get(f.name, f.name.replace('_', ' '))} (default {default})"
        if f.name == "compile":  # --compile alone: True (the default mode)
            group.add_argument(*flags, dest=f.name, nargs="?", const=True, default=argparse.SUPPRESS,
                               choices=COMPILE_MODES, help=help_text)
        elif f.name == "clean_train_eval":  # alone: every epoch; with N: every N epochs
            group.add_argument(*flags, dest=f.name, nargs="?", const=True, type=int,
                               default=argparse.SUPPRESS, help=help_text)
        elif isinstance(default, bool):
            group.add_argument(*flags, dest=f.name, action="store_true", default=argparse.SUPPRESS,
                               help=help_text)
        else:
            group.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, help=help_text,
                               type=SPECIAL_TYPES.get(f.name, type(default)),
                               choices=CHOICES.get(f.name))
    group.add_argument("--w", type=float, default=None, help="CCQL weight (default sqrt(K-1) - 1)")
    group.add_argument("--rs-k", type=float, default=None, help="rescaled_square k (default 1)")
    group.add_argument("--rs-m", type=float, default=None, help="rescaled_square M (default 1)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated TrainConfig of the given options; ValueError names an invalid one."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    given.setdefault("num_classes", None)  # K is implied by the subset or given: never assumed
    options = {"w": args.w, "k": args.rs_k, "M": args.rs_m}
    config = TrainConfig(**given, loss_options={k: v for k, v in options.items() if v is not None})
    config.resolved()
    resolve_device(config.device)
    return config


def add_store_arguments(parser: argparse.ArgumentParser, data: bool = True) -> None:
    group = parser.add_argument_group("where things are")
    if data:
        group.add_argument("--data-root", default=None,
                           help="folder holding cifar-100-python/ (default: $CCQL_DATA_ROOT, else ./data)")
        group.add_argument("--unverified-data", action="store_true",
                           help="accept a copy whose content differs from CIFAR-100's (structure is "
                                "still checked; such runs get their own run ids)")
        group.add_argument("--quiet", action="store_true", help="no progress output")
    group.add_argument("--runs-dir", default="runs", help="the run store (default ./runs)")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    from .context import EXECUTORS
    group = parser.add_argument_group("executing many runs")
    group.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: one run after another; ray: concurrently on a Ray cluster")
    group.add_argument("--address", default=None,
                       help="with ray: the cluster to join (default $RAY_ADDRESS, else start one here)")
    group.add_argument("--runs-per-gpu", type=int, default=None,
                       help="runs sharing one GPU: up to this many small-model runs train stacked "
                            "as one program (default 32 on a GPU, 1 on a CPU); with ray each stack is one "
                            "task, and runs that stack with nothing share a GPU this many at a time")


def _executor(args) -> dict:
    return {"executor": args.executor, "address": args.address, "runs_per_gpu": args.runs_per_gpu}


def _context(args):
    """The RunContext of the command's store, data and executor options."""
    from .context import RunContext
    return RunContext.of(runs_dir=args.runs_dir, data_root=args.data_root,
                         verify_data=not args.unverified_data, progress=False if args.quiet else None,
                         **{k: getattr(args, k, None) for k in ("executor", "address", "runs_per_gpu")})


def _report_diverged(diverged: dict[str, str], how_to_fix: str) -> int:
    for label, state in diverged.items():
        print(f"error: run {label} {state}: lower its learning rate ({how_to_fix})", file=sys.stderr)
    return EXIT_DIVERGED if diverged else 0


# --------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    from .scheduler import obtain
    config = config_from_args(args)
    ctx = _context(args)
    run_id = ctx.store.path(config).name
    run = obtain(ctx, {run_id: config}, "train")[run_id]
    final = run.final()
    if final:
        print(f"{run.describe()}: {len(run.history)} epochs; final train acc {final['train_acc']:.4f}, "
              f"test acc {final['test_acc']:.4f}, test loss (normalized) "
              f"{final['test_loss_norm']:.4f}", file=sys.stderr)
    print(Path(args.runs_dir) / run_id)  # as given: relative if --runs-dir is
    return _report_diverged({run.run_dir.name: run.describe()} if run.diverged else {}, "--lr")


def _overrides(args) -> dict:
    return {name: getattr(args, name, None) for name in OVERRIDES}


def cmd_run(args) -> int:
    import pandas as pd
    from .experiments import run_experiment
    resolve_device(args.device)  # also when every run is stored: a bad value is still a bad argument
    result = run_experiment(args.experiment, args.preset, seed=args.seed, seeds=args.seeds,
                            data_root=args.data_root,
                            runs_dir=args.runs_dir, verify_data=not args.unverified_data,
                            progress=False if args.quiet else None, **_executor(args),
                            **_overrides(args))
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        table = result.results_table()
        print(table.drop(columns=table.columns[-1]).to_string(index=False))  # not the paper's text
    if result.missing():
        print(f"error: {len(result.missing())} run(s) not trained: {', '.join(result.missing())}",
              file=sys.stderr)
        return 1
    return _report_diverged(result.diverged(), "--lr loss=value")


def cmd_sweep_lr(args) -> int:
    import pandas as pd
    from .presets import experiment_configs
    from .sweep import sweep_lr
    if args.experiment:
        configs = list(experiment_configs(args.experiment, args.preset, seed=getattr(args, "seed", 0),
                                          **_overrides(args)).values())
        if args.losses:
            configs = [c for c in configs if c.loss in args.losses]
    else:
        configs = [config_from_args(args)]
    ctx = _context(args)
    tables = [sweep_lr(c, args.lrs, ctx, tolerance=args.tolerance) for c in configs]
    table = pd.concat(tables, ignore_index=True)
    print(table.drop(columns="run_dir").to_string(index=False))
    if args.output:
        atomic_write_text(Path(args.output), table.to_csv(index=False))
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def cmd_notebook(args) -> int:
    from .notebooks import execute_notebook, parse_parameter, trains
    parameters = {name: parse_parameter(value) for name, value in args.parameter}
    # Paths on the command line are relative to where the command runs (the notebook runs in
    # its own folder), so make them absolute.
    for name in ("data_root", "runs_dir", "figures_dir"):
        if isinstance(parameters.get(name), str):
            parameters[name] = _absolute(parameters[name])
    if trains(args.path):
        parameters.setdefault("progress", "lines")  # headless: a line per epoch, no bars
    output = args.output or str(Path("outputs") / Path(args.path).name)
    execute_notebook(args.path, output, parameters, prepare_only=args.prepare_only,
                     log_output=not args.quiet)
    print(output)
    return 0


def cmd_all(args) -> int:
    """What run_all.sh does: every notebook at one preset, then the summary."""
    import time
    from .notebooks import (NOTEBOOKS_DIR, declared_names, execute_notebook, experiment_of,
                            figure_of, trains)
    if args.data_root is not None and not Path(args.data_root).exists():
        raise ValueError(f"--data-root {args.data_root} does not exist")
    resolve_device(args.device)
    preset = resolve_preset(args.preset, args.device)
    if args.preset == "auto":
        print(f"[all] preset auto -> {preset} ({get_preset(preset).description})")
    figures_dir = PROJECT_ROOT / ("outputs/tiny/figures" if preset == "tiny" else "figures")
    out_dir = PROJECT_ROOT / "outputs" / preset
    notebooks = [p for p in sorted(NOTEBOOKS_DIR.glob("*.ipynb")) if args.only in p.name]
    if not notebooks:
        raise ValueError(f"--only {args.only!r} matches no notebook in {NOTEBOOKS_DIR}")
    diverged, start = {}, time.time()
    if args.executor != "local":
        _train_all_at_once(args, preset, [experiment_of(p) for p in notebooks if experiment_of(p)])
    for path in notebooks:
        parameters = {"figures_dir": str(figures_dir)}
        if trains(path):
            run_parameters = dict(preset=preset, device=args.device, runs_dir=_absolute(args.runs_dir),
                                  progress="lines", data_root=_absolute(args.data_root), lr=args.lr,
                                  seeds=args.seeds, verify_data=False if args.unverified_data else None,
                                  **_executor(args))
            declared = declared_names(path)  # 04 has no `lr`, for one
            parameters.update({k: v for k, v in run_parameters.items() if v is not None and k in declared})
        print(f"[all] {time.strftime('%H:%M:%S')} {path.name} (preset {preset}) -> {out_dir / path.name}",
              flush=True)
        t0 = time.time()
        execute_notebook(path, out_dir / path.name, parameters, log_output=not args.quiet)
        print(f"[all] {path.name} done in {time.time() - t0:.0f} s", flush=True)
        if trains(path):
            record = figures_dir / f"{figure_of(path)}_{preset}.provenance.json"
            runs = json.loads(record.read_text())["parameters"]["runs"]
            diverged.update({f"{label} of {path.name}": f"diverged at epoch {r['diverged_epoch']} "
                             f"(lr {r.get('lr') or r['config']['lr']})" for label, r in runs.items()
                             if r["state"] == "diverged"})
    print(f"\n[all] finished {len(notebooks)} notebook(s) in {time.time() - start:.0f} s "
          f"(preset {preset}). Figures:")
    summarise(figures_dir, Path(args.runs_dir), preset)
    return _report_diverged(diverged, "rerun with --lr loss=value, e.g. a third of it")


def _train_all_at_once(args, preset: str, experiments: list[str]) -> None:
    """Hand every run of every figure to the executor in one call, so that a cluster trains them
    side by side (the notebooks then draw from the finished runs); a run that two figures share
    (Fig 3's random-class QL run is Fig 1's) is trained once."""
    from .presets import experiment_seed_configs
    from .scheduler import obtain
    configs = {}
    for experiment in experiments:
        for c in experiment_seed_configs(experiment, preset, args.seeds, device=args.device,
                                         lr=args.lr).values():
            configs.setdefault(c.run_id(), c)
    print(f"[all] training the {len(configs)} run(s) of {len(experiments)} figure(s) at once "
          f"(executor {args.executor})", flush=True)
    obtain(_context(args), configs, "all")


def summarise(figures_dir: Path, runs_dir: Path, preset: str | None = None) -> int:
    """Each figure's path (from its provenance record) and each run's state and final test accuracy."""
    from .runs import load_run
    records = sorted(Path(figures_dir).glob("*.provenance.json"))
    records = [(r, json.loads(r.read_text())) for r in records]
    if preset:
        records = [(r, d) for r, d in records if d["parameters"].get("preset", preset) == preset]
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


def cmd_summary(args) -> int:
    return summarise(Path(args.figures_dir), Path(args.runs_dir), args.preset)


def cmd_export(args) -> int:
    from .presets import experiment_configs
    from .records import export_records
    from .runs import RunStore
    runs_dir = Path(args.runs_dir)
    if args.experiment:
        store = RunStore(runs_dir)
        dirs = [store.path(c) for e in args.experiment
                for c in experiment_configs(e, resolve_preset(args.preset)).values()]
    else:
        dirs = (sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
                if runs_dir.is_dir() else [])  # not the hidden folders of an import or export killed midway
    exported = export_records(dirs, args.output)
    print(f"exported {len(exported)} finished or diverged run(s) of {len(dirs)} to {args.output}",
          file=sys.stderr)
    return 0 if exported else 1


def cmd_import(args) -> int:
    from .records import import_records
    added = import_records(args.source, args.runs_dir, replace=args.replace)
    print(f"added {len(added)} run(s) to {args.runs_dir}" + "".join(f"\n    {a}" for a in added),
          file=sys.stderr)
    return 0


def cmd_pack(args) -> int:
    from .data import load_cifar100, select_classes
    from .packs import pack_subset
    data = load_cifar100(args.data_root, verify=not args.unverified_data, download=False)
    config = TrainConfig(classes=args.classes, num_classes=args.k, seed=args.class_seed,
                         train_per_class=args.train_per_class, test_per_class=args.test_per_class).resolved()
    classes = select_classes(config.classes, data, config.num_classes, config.class_seed)
    path = pack_subset(data, args.output, classes, config.train_per_class, config.test_per_class,
                       part_mib=args.part_mib)
    sizes = sorted(p.stat().st_size for p in path.iterdir()) if path.is_dir() else [path.stat().st_size]
    what = f"{len(sizes) - 1} parts + manifest, the largest" if path.is_dir() else "one file,"
    print(f"wrote {path} ({what} {sizes[-1] / 2**20:.1f} MiB; {sum(sizes) / 2**20:.1f} MiB in all): "
          f"{len(classes)} classes, {config.train_per_class or 'all'} train / "
          f"{config.test_per_class or 'all'} test images per class")
    return 0


def cmd_verify_pack(args) -> int:
    from .packs import load_packed
    data = load_packed(args.path)  # DataError names a missing or damaged part
    print(f"{args.path}: complete, {len(data.train_images)} training and {len(data.test_images)} test "
          f"images, " + ("the real CIFAR-100 (checked image by image)" if data.verified else
                         "NOT the real CIFAR-100: runs on it need --unverified-data and get run ids of their own"))
    return 0


DRY_RUN = dict(depth=10, width=1, epochs=2, train_per_class=10, batch_size=64)  # a lease's CPU rehearsal


def cmd_plan(args) -> int:
    from .gpu_queue import plan
    print(plan(args.budget_s, _context(args).store, args.data_root, overrides=DRY_RUN if args.dry_run else None).describe())
    return 0


def cmd_lease(args) -> int:
    from .gpu_queue import lease
    resolve_device(args.device)
    return lease(_context(args), args.budget_s, args.output, args.device,
                 overrides=DRY_RUN if args.dry_run else None)


# --------------------------------------------------------------------- the parser
def _experiment_arguments(parser, preset_default="auto") -> None:
    parser.add_argument("--preset", default=preset_default, choices=(*PRESETS, "auto"),
                        help="scale (auto: paper on a CUDA machine, quick elsewhere)")
    parser.add_argument("--seed", type=int, default=0, help="model init, data order, class draw")
    parser.add_argument("--seeds", type=_ints, default=None,
                        help="several seeds, e.g. 0,1,2: mean +- sd over them (the classes: the first's)")
    o = parser.add_argument_group("overrides of the preset")
    o.add_argument("--epochs", type=int)
    o.add_argument("--depth", type=int)
    o.add_argument("--width", type=int)
    o.add_argument("--train-per-class", type=int)
    o.add_argument("--batch-size", type=int)
    o.add_argument("--lr", type=_lr, help="one LR for every loss, or loss=lr pairs: ql=0.03,ccql=0.02")
    o.add_argument("--w", type=float, help="CCQL weight")
    o.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    o.add_argument("--compile", nargs="?", const=True, default=None, choices=COMPILE_MODES,
                   help=f"torch.compile the model; a mode: {', '.join(COMPILE_MODES)}")
    o.add_argument("--checkpoint-every", type=int)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m ccql_utils", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train (or resume, or read back) one run")
    add_config_arguments(p)
    add_store_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("run", help="every run of one experiment (a figure's runs), no papermill")
    p.add_argument("experiment", choices=EXPERIMENTS)
    _experiment_arguments(p)
    add_store_arguments(p)
    add_executor_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("all", help="execute every notebook at one preset (what run_all.sh runs)")
    p.add_argument("--preset", default="auto", choices=(*PRESETS, "auto"),
                   help="auto: paper on a CUDA machine, quick elsewhere")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--only", default="", help="only notebooks whose file name contains this")
    p.add_argument("--lr", type=_lr, default=None,
                   help="override the preset's LRs, e.g. ql=0.01 (the fix for a diverged run)")
    p.add_argument("--seeds", type=_ints, default=None,
                   help="several seeds for every figure, e.g. 0,1,2: mean +- sd bands")
    p.add_argument("--unverified-data", action="store_true",
                   help="accept a copy whose content differs from CIFAR-100's")
    p.add_argument("--runs-dir", default=str(PROJECT_ROOT / "runs"))
    p.add_argument("--quiet", action="store_true", help="do not echo cell output")
    add_executor_arguments(p)
    p.set_defaults(func=cmd_all)

    p = sub.add_parser("notebook", help="execute a notebook with papermill (unknown parameters are errors)")
    p.add_argument("path")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="VALUE is JSON if it parses, else a string")
    p.add_argument("--output", default=None, help="executed copy (default outputs/NAME)")
    p.add_argument("--prepare-only", action="store_true", help="inject parameters, do not run")
    p.add_argument("--quiet", action="store_true", help="do not echo cell output")
    p.set_defaults(func=cmd_notebook)

    p = sub.add_parser("summary", help="figures and the final test accuracy of their runs")
    p.add_argument("--figures-dir", default="figures")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--preset", default=None, help="only figures of this preset")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("sweep-lr", help="short runs over a grid of initial LRs; best by test accuracy",
                       description="Either one run configuration (the train options) or a preset "
                                   "experiment's runs (--experiment, --preset) with overrides.")
    p.add_argument("--lrs", type=_floats, required=True, help="e.g. 0.01,0.03,0.1,0.3")
    p.add_argument("--experiment", choices=EXPERIMENTS)
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--losses", type=lambda t: t.split(","), default=None,
                   help="with --experiment: only these losses (comma-separated)")
    p.add_argument("--tolerance", type=float, default=0.005,
                   help="best = the smallest LR within this much test accuracy of the top")
    p.add_argument("--output", default=None, help="write the table as CSV here")
    add_config_arguments(p)
    add_store_arguments(p)
    add_executor_arguments(p)
    p.set_defaults(func=cmd_sweep_lr)

    p = sub.add_parser("export", help="records of finished runs (config, metrics, status; no checkpoints)")
    p.add_argument("--output", required=True, help="a folder, or a file ending in .tar.gz")
    p.add_argument("--experiment", action="append", choices=EXPERIMENTS,
                   help="only this experiment's runs (repeatable; default: every run in --runs-dir)")
    p.add_argument("--preset", default="auto", choices=(*PRESETS, "auto"))
    add_store_arguments(p, data=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("pack", help="write a class subset as one .npz, or as a folder of parts "
                                    "(use either as --data-root on a machine without the full data "
                                    "set, e.g. a GPU node)")
    p.add_argument("--classes", type=_classes, default="random", help="random | all | mammals | names")
    p.add_argument("--k", type=int, default=None, help="K, with --classes random")
    p.add_argument("--class-seed", type=int, default=0, help="seed of the random class draw")
    p.add_argument("--train-per-class", type=int, default=None, help="first N per class (default all)")
    p.add_argument("--test-per-class", type=int, default=None, help="first N per class (default all)")
    p.add_argument("--data-root", default=None)
    p.add_argument("--output", required=True,
                   help="a .npz to write (e.g. .carry/k25.npz), or a folder of parts (e.g. .carry/all)")
    p.add_argument("--unverified-data", action="store_true",
                   help="pack a copy whose content is not CIFAR-100's (a test stand-in)")
    p.add_argument("--part-mib", type=float, default=None,
                   help="with a folder output: the largest part in MiB (default 50)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("verify-pack", help="check a pack (.npz or a folder of parts): complete, "
                                           "intact, and whether it is the real CIFAR-100")
    p.add_argument("path")
    p.set_defaults(func=cmd_verify_pack)

    for name, help_text in (("plan", "the next paper-scale GPU runs of the queue that fit a budget"),
                            ("lease", "train the plan on a GPU, exporting the records after each run")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--budget-s", type=float, required=True, help="seconds of training available")
        p.add_argument("--dry-run", action="store_true",
                       help=f"rehearse on a CPU: every run shrunk to {DRY_RUN} (estimates stay the real ones)")
        add_store_arguments(p)
        if name == "lease":
            p.add_argument("--output", required=True, help="folder for records.tar.gz (the job's $OUT)")
            p.add_argument("--device", default="cuda", help="cuda (default) | cuda:N | cpu")
        p.set_defaults(func=cmd_plan if name == "plan" else cmd_lease)

    p = sub.add_parser("import", help="add exported run records to a runs folder (checked first)")
    p.add_argument("source", help="a .tar.gz made by export, or a folder of run folders")
    p.add_argument("--replace", action="store_true",
                   help="replace a stored run whose record differs from (or is damaged compared "
                        "with) the imported one; its checkpoint goes too")
    add_store_arguments(p, data=False)
    p.set_defaults(func=cmd_import)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM takes Ctrl-C's path: the run is marked and resumable


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except ValueError as exc:  # invalid values that only the configuration can judge
        parser.exit(2, f"{parser.prog} {args.command}: error: {exc}\n")
    except (DataError, RunError, ExecutorError) as exc:
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
        from .notebooks import NotebookFailed
        if isinstance(exc, NotebookFailed):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if type(exc).__name__ == "OutOfMemoryError":
            print(f"error: out of GPU memory ({exc}); lower --batch-size or free the GPU",
                  file=sys.stderr)
            return 1
        raise
