"""`python -m ccql_utils COMMAND ...`: the command line over the functions the notebooks call.

    python -m ccql_utils train --loss ccql --classes random --k 25 --seed 0 --epochs 200 \
        --lr 0.1 --depth 28 --width 10 --data-root PATH --runs-dir runs --device auto

`train` prints the run directory as its last line. Exit codes: 0 finished, 1 data or runtime
error, 2 invalid arguments, 3 the run diverged (non-finite loss).
"""
from __future__ import annotations

import argparse
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ccql_utils", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train (or resume, or fetch) one run")
    add_train_arguments(train)
    train.set_defaults(func=cmd_train, subparser=train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args, args.subparser)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
