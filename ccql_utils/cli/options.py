"""The command line's options: one option per TrainConfig field and per preset override,
generated from those tables, and the run context every command builds from its options."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..core.config import COMPILE_MODES, PRECISIONS, TrainConfig, resolve_device
from ..execution.context import EXECUTORS, RunContext
from ..core.data import SUBSET_KINDS
from ..core.losses import loss_names
from ..figures.presets import OVERRIDES, PAPER_LRS

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


_floats, _ints, _names = _list_of(float, "number"), _list_of(int, "integer"), _list_of(str, "name")


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
# types other than the default's (a field whose default is None takes an int)
TYPES = {"classes": _classes, "lr_milestones": _floats, "compile": str, "clean_train_eval": int}
HELP = {"classes": "random | all | mammals | comma-separated CIFAR-100 class names",
        "num_classes": "number of classes K (required with --classes random)",
        "class_seed": "seed of the random class draw (default: --seed)",
        "train_per_class": "training images per class, 1-500 (default: all)",
        "test_per_class": "test images per class, 1-100 (default: all)",
        "width": "widen factor",
        "lr": "initial learning rate (default: the paper preset's for the loss and K, presets.PAPER_LRS, else 0.1)",
        "lr_milestones": "LR drops as fractions of the run", "seed": "model init and data order",
        "clean_train_eval": "also evaluate the un-augmented training set in eval mode: every epoch, "
                            "or every N epochs and the last with --clean-train-eval N",
        "device": "auto | cpu | cuda | cuda:N", "compile": f"torch.compile the model; a mode: {', '.join(COMPILE_MODES)}",
        "checkpoint_every": "epochs between checkpoints"}
NOT_OPTIONS = ("loss_options", "loss_code", "dataset")  # set through --w/--loss-option, the loss and the data


def _add_field_options(group, names, default=argparse.SUPPRESS) -> None:
    """One option per named TrainConfig field, typed as the field (argparse.SUPPRESS: an option
    not given is absent from the namespace)."""
    choices = {"loss": loss_names(), "precision": PRECISIONS, "compile": COMPILE_MODES}
    for name in names:
        value = getattr(TrainConfig(), name)
        kwargs = dict(type=TYPES.get(name, int if value is None else type(value)), choices=choices.get(name))
        if name in ("compile", "clean_train_eval"):  # alone: True (the default mode; every epoch)
            kwargs.update(nargs="?", const=True)
        elif isinstance(value, bool):
            kwargs = dict(action="store_true")
        shown = f" (default {value})" if default is argparse.SUPPRESS and name != "lr" else ""
        group.add_argument(f"--{name.replace('_', '-')}", *ALIASES.get(name, []), dest=name, default=default,
                           help=HELP.get(name, name.replace("_", " ")) + shown, **kwargs)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field; an option not given keeps the field's default."""
    group = parser.add_argument_group("run configuration (defaults: the paper's protocol)")
    _add_field_options(group, [f.name for f in dataclasses.fields(TrainConfig) if f.name not in NOT_OPTIONS])
    group.add_argument("--w", type=float, default=None, help="CCQL weight (default sqrt(K-1) - 1)")
    group.add_argument("--rs-k", type=float, default=None, help="rescaled_square k (default 1)")
    group.add_argument("--rs-m", type=float, default=None, help="rescaled_square M (default 1)")
    group.add_argument("--loss-option", type=_loss_option, action="append", default=[], metavar="NAME=VALUE",
                       help="any loss option, e.g. gamma=1 (focal), eps=0.05 (label_smoothing) or a "
                            "registered loss's parameter; repeat for several")


def _loss_option(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated TrainConfig of the given options; ValueError names an invalid one."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if hasattr(args, f.name)}
    given.setdefault("num_classes", None)  # K is implied by the subset or given: never assumed
    options = {"w": args.w, "k": args.rs_k, "M": args.rs_m, **dict(args.loss_option)}
    config = TrainConfig(**given, loss_options={k: v for k, v in options.items() if v is not None}).resolved()
    if "lr" not in given and config.loss in PAPER_LRS.get(config.num_classes, {}):
        config = dataclasses.replace(config, lr=PAPER_LRS[config.num_classes][config.loss]).resolved()
    resolve_device(config.device)
    return config


def add_store_arguments(parser: argparse.ArgumentParser, data: bool = True) -> None:
    group = parser.add_argument_group("where things are")
    group.add_argument("--runs-dir", default=None, help="the run store (default: runs/ in the repository)")
    if data:
        group.add_argument("--data-root", default=None, help="folder holding cifar-100-python/, or a "
                           "pack (default: $CCQL_DATA_ROOT, else data/ in the repository)")
        group.add_argument("--unverified-data", action="store_true",
                           help="accept a copy whose content differs from CIFAR-100's (structure is "
                                "still checked; such runs get their own run ids)")
        group.add_argument("--quiet", action="store_true", help="no progress output")
        group.add_argument("--loss-module", action="append", default=[], metavar="FILE.py",
                           help="a Python file that registers your losses (user_losses.register_loss), "
                                "run before the command; repeat for several")


def load_loss_modules(argv: list[str]) -> None:
    """Run the --loss-module files on the command line (before the parser is built, so that
    --loss accepts the names they register)."""
    import runpy
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--loss-module", action="append", default=[])
    for path in pre.parse_known_args(argv)[0].loss_module:
        if not Path(path).is_file():
            raise ValueError(f"--loss-module {path}: no such file")
        runpy.run_path(path, run_name="__loss_module__")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executing many runs")
    group.add_argument("--executor", default="local", choices=EXECUTORS,
                       help="local: one run after another; ray: concurrently on a Ray cluster")
    group.add_argument("--address", default=None,
                       help="with ray: the cluster to join (default $RAY_ADDRESS, else start one here)")
    group.add_argument("--runs-per-gpu", type=int, default=None,
                       help="runs sharing one GPU: up to this many small-model runs train stacked "
                            "as one program (default 32 on a GPU, 1 on a CPU); with ray each stack is one "
                            "task, and runs that stack with nothing share a GPU this many at a time")


def context(args) -> RunContext:
    """The one RunContext of a command, from its options (an option it lacks keeps the default)."""
    return RunContext.of(runs_dir=getattr(args, "runs_dir", None), data_root=getattr(args, "data_root", None),
                         verify_data=not getattr(args, "unverified_data", False),
                         progress=False if getattr(args, "quiet", False) else None,
                         **{k: getattr(args, k, None) for k in ("executor", "address", "runs_per_gpu", "device")})


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """The preset overrides (presets.OVERRIDES) as options, typed as TrainConfig's fields; --lr
    also takes loss=lr pairs, --w is CCQL's weight. Not given: the preset's value."""
    group = parser.add_argument_group("overrides of the preset")
    _add_field_options(group, [n for n in OVERRIDES if n not in ("lr", "w")], default=None)
    group.add_argument("--lr", type=_lr, help="one LR for every loss, or loss=lr pairs: ql=0.03,ccql=0.02")
    group.add_argument("--w", type=float, help="CCQL weight")


def report_diverged(diverged: dict[str, str], how_to_fix: str) -> int:
    for label, state in diverged.items():
        print(f"error: run {label} {state}: lower its learning rate ({how_to_fix})", file=sys.stderr)
    return 3 if diverged else 0  # the exit code of a diverged run


def command(sub, name: str, func, help: str, **kwargs) -> argparse.ArgumentParser:
    """The subcommand `name`, which runs `func(args)`."""
    p = sub.add_parser(name, help=help, **kwargs)
    p.set_defaults(func=func)
    return p
