"""`python -m ccql_utils COMMAND ...`: the command line over the functions the notebooks call.

    python -m ccql_utils train --loss ccql --classes random --k 25 --seed 0 --epochs 200 \
        --lr 0.1 --depth 28 --width 10 --data-root PATH --runs-dir runs --device auto

`train` prints the run directory as its last line. Exit codes: 0 finished, 1 data or runtime
error, 2 invalid arguments, 3 the run diverged (non-finite loss).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .data import DataError
from .losses import LOSS_NAMES
from .train import PRECISIONS, TrainConfig


def _classes(text: str):
    """'random' | 'all' | 'mammals' | comma-separated class names."""
    return text if text in ("random", "all", "mammals") else [n.strip() for n in text.split(",") if n.strip()]


def _milestones(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"milestones must be comma-separated fractions, got {text!r}")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The run configuration's options (shared by `train` and `sweep-lr`)."""
    d = TrainConfig()
    g = parser.add_argument_group("run configuration")
    g.add_argument("--loss", choices=LOSS_NAMES, default=d.loss)
    g.add_argument("--w", type=float, default=None, help="CCQL weight (default sqrt(K-1) - 1)")
    g.add_argument("--rs-k", type=float, default=None, help="rescaled_square k (default 1)")
    g.add_argument("--rs-m", type=float, default=None, help="rescaled_square M (default 1)")
    g.add_argument("--classes", type=_classes, default=d.classes,
                   help="random | all | mammals | comma-separated CIFAR-100 class names")
    g.add_argument("--k", type=int, default=None, help="number of classes K (for --classes random)")
    g.add_argument("--seed", type=int, default=d.seed, help="model init and data order seed")
    g.add_argument("--class-seed", type=int, default=None,
                   help="seed of the random class draw (default: --seed)")
    g.add_argument("--train-per-class", type=int, default=None,
                   help="cap on training images per class (default: all 500)")
    g.add_argument("--depth", type=int, default=d.depth)
    g.add_argument("--width", type=int, default=d.width, help="widen factor")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr, help="initial learning rate")
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--milestones", type=_milestones, default=d.lr_milestones,
                   help="LR drops as fractions of the run (default 0.25,0.4,0.55,0.75,0.85)")
    g.add_argument("--lr-factor", type=float, default=d.lr_factor)
    g.add_argument("--precision", choices=PRECISIONS, default=d.precision)
    g.add_argument("--clean-train-eval", action="store_true",
                   help="also evaluate the un-augmented training set each epoch")
    e = parser.add_argument_group("execution")
    e.add_argument("--data-root", default=None,
                   help="folder holding cifar-100-python/ (default: $CCQL_DATA_ROOT, else ./data)")
    e.add_argument("--unverified-data", action="store_true",
                   help="accept a copy whose content differs from CIFAR-100's (structure is still "
                        "checked; such runs get their own run ids)")
    e.add_argument("--runs-dir", default="runs")
    e.add_argument("--device", default=d.device, help="auto | cpu | cuda | cuda:N")
    e.add_argument("--compile", action="store_true", help="torch.compile the model")
    e.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="epochs")
    e.add_argument("--quiet", action="store_true", help="no progress output")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build and validate the TrainConfig; raises ValueError on invalid values."""
    loss_options = {}
    if args.w is not None:
        loss_options["w"] = args.w
    if args.rs_k is not None:
        loss_options["k"] = args.rs_k
    if args.rs_m is not None:
        loss_options["M"] = args.rs_m
    config = TrainConfig(
        loss=args.loss, loss_options=loss_options, classes=args.classes, num_classes=args.k,
        class_seed=args.class_seed, train_per_class=args.train_per_class, depth=args.depth,
        width=args.width, dropout=args.dropout, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
        nesterov=args.nesterov, lr_milestones=args.milestones, lr_factor=args.lr_factor,
        seed=args.seed, precision=args.precision, clean_train_eval=args.clean_train_eval,
        device=args.device, compile=args.compile, checkpoint_every=args.checkpoint_every)
    config.resolved()
    return config


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .runs import get_run
    from .train import resolve_device
    try:
        config = config_from_args(args)
        resolve_device(config.device)
    except ValueError as exc:
        parser.error(str(exc))
    run = get_run(config, runs_dir=args.runs_dir, data_root=args.data_root,
                  verify_data=not args.unverified_data, progress=False if args.quiet else None)
    final = run.final()
    if final:
        print(f"{run.state}: {len(run.history)} epochs; final train acc {final['train_acc']:.4f}, "
              f"test acc {final['test_acc']:.4f}, test loss (normalized) "
              f"{final['test_loss_norm']:.4f}", file=sys.stderr)
    print(run.run_dir)
    return 3 if run.diverged else 0


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")


def cmd_sweep_lr(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import pandas as pd
    from .data import load_cifar100
    from .presets import experiment_configs
    from .sweep import sweep_lr
    try:
        if args.experiment:
            configs = list(experiment_configs(
                args.experiment, args.preset, seed=args.seed, epochs=args.epochs,
                depth=args.depth, width=args.width, train_per_class=args.train_per_class,
                device=args.device).values())
            if args.losses:
                configs = [c for c in configs if c.loss in args.losses]
        else:
            defaults = TrainConfig()
            for name in ("epochs", "depth", "width"):
                if getattr(args, name) is None:
                    setattr(args, name, getattr(defaults, name))
            configs = [config_from_args(args)]
    except ValueError as exc:
        parser.error(str(exc))
    data = load_cifar100(args.data_root, verify=not args.unverified_data)
    tables = [sweep_lr(c, args.lrs, runs_dir=args.runs_dir, data=data, tolerance=args.tolerance,
                       progress=False if args.quiet else None) for c in configs]
    table = pd.concat(tables, ignore_index=True)
    print(table.drop(columns="run_dir").to_string(index=False))
    if args.output:
        table.to_csv(args.output, index=False)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_notebook(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .notebooks import execute_notebook, parse_parameter
    parameters = {name: parse_parameter(value) for name, value in args.parameter}
    # Paths on the command line are relative to where the command runs (the notebook runs in
    # its own folder), so make them absolute.
    for name in ("data_root", "runs_dir", "figures_dir"):
        if isinstance(parameters.get(name), str):
            parameters[name] = str(Path(parameters[name]).expanduser().resolve())
    output = args.output or str(Path("outputs") / Path(args.path).name)
    try:
        execute_notebook(args.path, output, parameters, prepare_only=args.prepare_only,
                         log_output=not args.quiet)
    except ValueError as exc:
        parser.error(str(exc))
    except Exception as exc:  # papermill's execution error names the failing cell
        print(f"error: notebook {args.path} failed; executed copy with the error: {output}\n{exc}",
              file=sys.stderr)
        return 1
    print(output)
    return 0


def cmd_summary(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Each figure's path (from its provenance record) and each run's final test accuracy."""
    import json
    from .runs import load_run
    records = sorted(Path(args.figures_dir).glob("*.provenance.json"))
    if args.preset:
        records = [r for r in records
                   if json.loads(r.read_text())["parameters"].get("preset", args.preset) == args.preset]
    if not records:
        print(f"no figures in {args.figures_dir}", file=sys.stderr)
        return 1
    for record_path in records:
        record = json.loads(record_path.read_text())
        png = record_path.with_name(record["figure"] + ".png")
        print(f"{png}  [{record['environment']['date_utc']}, commit {record['environment']['commit'][:12]}]")
        for label, run in record["parameters"].get("runs", {}).items():
            run_dir = Path(args.runs_dir) / run["run_id"]
            final = load_run(run_dir).final() if run_dir.exists() else {}
            acc = f"{final['test_acc']:.4f}" if final else "n/a (run not in this runs folder)"
            print(f"    {label:<20} {run['state']:<9} {run['epochs_completed']:>3} epochs  "
                  f"final test acc {acc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ccql_utils", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train (or resume, or fetch) one run")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train, subparser=train)

    nb = sub.add_parser("notebook", help="execute a notebook with papermill (unknown parameters are errors)")
    nb.add_argument("path")
    nb.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                    metavar=("NAME", "VALUE"), help="VALUE is JSON if it parses, else a string")
    nb.add_argument("--output", default=None, help="executed copy (default outputs/NAME)")
    nb.add_argument("--prepare-only", action="store_true", help="inject parameters, do not run")
    nb.add_argument("--quiet", action="store_true", help="do not echo cell output")
    nb.set_defaults(func=cmd_notebook, subparser=nb)

    summary = sub.add_parser("summary", help="figures and the final test accuracy of their runs")
    summary.add_argument("--figures-dir", default="figures")
    summary.add_argument("--runs-dir", default="runs")
    summary.add_argument("--preset", default=None, help="only figures of this preset")
    summary.set_defaults(func=cmd_summary, subparser=summary)

    sweep = sub.add_parser("sweep-lr", help="short runs over a grid of initial LRs; best by test accuracy",
                           description="Either one run configuration (the train options) or a "
                                       "preset experiment's runs (--experiment, --preset) with "
                                       "--epochs etc. as overrides.")
    sweep.add_argument("--lrs", type=_floats, required=True, help="e.g. 0.01,0.03,0.1,0.3")
    sweep.add_argument("--experiment", choices=("k25_random", "k100", "mammals_vs_random"))
    sweep.add_argument("--preset", default="quick", choices=("paper", "quick", "tiny"))
    sweep.add_argument("--losses", type=lambda t: t.split(","), default=None,
                       help="with --experiment: only these losses (comma-separated)")
    sweep.add_argument("--tolerance", type=float, default=0.005,
                       help="best = the smallest LR within this much test accuracy of the top")
    sweep.add_argument("--output", default=None, help="write the table as CSV here")
    add_train_arguments(sweep)
    sweep.set_defaults(func=cmd_sweep_lr, subparser=sweep, epochs=None, depth=None, width=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args, args.subparser)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
