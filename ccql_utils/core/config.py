"""The configuration of one training run, its identity (run id) and its LR schedule.

`TrainConfig`'s defaults are the paper's protocol (docs/protocol.md); the presets (presets.py)
change only what a smaller scale needs. `resolved()` fills in what the other fields imply (K of a
named subset, the class seed, CCQL's weight) and asks each owner to validate its part: the data,
the model and the loss. `run_id()` hashes the identity (every field but the execution-only ones).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from .data import resolve_cap, resolve_classes
from .losses import default_ccql_weight, loss_spec, make_loss
from .wrn import WideResNet

PRECISIONS = ("auto", "fp32", "bf16")
# torch.compile modes a run may ask for (compile=True is "default"); "reduce-overhead" replays the
# forward and backward as CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# Fields that say how a run executes, not what it computes: left out of the run's identity.
EXECUTION_FIELDS = ("device", "compile", "checkpoint_every", "eval_batch_size")
# The loader seeds epoch e with seed * 1_000_003 + e (loader.py), which torch.manual_seed accepts
# below 2**64: seeds up to 10**13 - 1 leave room for any number of epochs below 10**12.
MAX_SEED = 10**13 - 1


@dataclass
class TrainConfig:
    """Everything that defines one training run. Units: lr per SGD step; epochs are full passes."""

    loss: str = "ce"                       # a losses.LOSSES name: ce, ql, ccql, rescaled_square, squentropy, ...
    loss_options: dict = field(default_factory=dict)  # ccql: {"w": ...}; rescaled_square: {"k", "M"}
    loss_code: str | None = None           # a user's loss: the hash of its source (user_losses.py)
    classes: str | list = "random"         # random | all | mammals | [class names]
    num_classes: int | None = 25           # K (required for random; implied otherwise)
    class_seed: int | None = None          # seed of the random class draw; None: same as seed
    train_per_class: int | None = None     # cap on training images per class; None: all 500
    test_per_class: int | None = None      # cap on test images per class; None: all 100
    depth: int = 28
    width: int = 10
    dropout: float = 0.0
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    lr_milestones: tuple = (0.25, 0.4, 0.55, 0.75, 0.85)  # fractions of the run
    lr_factor: float = 0.25
    seed: int = 0                          # model initialisation and data order
    calibration_bins: int | None = None    # the test set's ECE in every epoch's row, over this many bins
    precision: str = "auto"                # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    clean_train_eval: bool | int = False   # un-augmented training set in eval mode: True every epoch, N every N and the last
    dataset: str = "cifar100"              # 'unverified-<folder>' for stand-in data
    # execution only (not part of the run's identity)
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    compile: bool | str = False            # torch.compile the model (CUDA): True or a COMPILE_MODES name
    checkpoint_every: int = 1              # epochs between checkpoints (always at the end)
    eval_batch_size: int = 1024

    def resolved(self) -> "TrainConfig":
        """A validated copy with implied values filled in. Raises ValueError naming the field."""
        if getattr(self, "_is_resolved", False):
            return self
        c = dataclasses.replace(self, loss_options=dict(self.loss_options or {}))
        try:
            c.lr_milestones = tuple(float(m) for m in c.lr_milestones)
        except (TypeError, ValueError):
            raise ValueError(f"lr_milestones must be fractions of the run, got {self.lr_milestones!r}")
        spec = loss_spec(c.loss)
        if c.loss_code not in (None, spec.code):
            raise ValueError(f"this run of loss {c.loss!r} was made with other code (source hash "
                             f"{c.loss_code}) than the one registered now ({spec.code}); register "
                             f"that code, or make a new config")
        c.loss_code = spec.code
        c.loss_options = {**spec.defaults, **c.loss_options}
        c.classes, c.num_classes = resolve_classes(c.classes, c.num_classes)
        for name in ("seed", "class_seed"):
            value = getattr(c, name)
            if value is not None and (not _is_int(value) or not 0 <= value <= MAX_SEED):
                raise ValueError(f"{name} must be an integer from 0 to {MAX_SEED:,}, got {value!r}")
            setattr(c, name, None if value is None else int(value))
        c.class_seed = c.seed if c.class_seed is None else c.class_seed
        c.train_per_class = resolve_cap("train", c.train_per_class)
        c.test_per_class = resolve_cap("test", c.test_per_class)
        if c.loss == "ccql" and c.loss_options.get("w") is None:
            c.loss_options["w"] = default_ccql_weight(c.num_classes)
        make_loss(c.loss, c.num_classes, **c.loss_options)  # the loss validates its options
        WideResNet.check_arguments(c.depth, c.width, c.num_classes, c.dropout)
        for name, low in (("epochs", 1), ("batch_size", 2), ("checkpoint_every", 1),
                          ("eval_batch_size", 1)):
            value = getattr(c, name)
            if not _is_int(value) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
            setattr(c, name, int(value))
        for name in ("lr", "momentum", "weight_decay", "lr_factor"):
            if not _is_number(getattr(c, name)):
                raise ValueError(f"{name} must be a number, got {getattr(c, name)!r}")
            setattr(c, name, float(getattr(c, name)))
        if not (c.lr > 0 and math.isfinite(c.lr)):
            raise ValueError(f"lr must be a positive number, got {c.lr!r}")
        if not 0 <= c.momentum < 1:
            raise ValueError(f"momentum must lie in [0, 1), got {c.momentum!r}")
        if not (c.weight_decay >= 0 and math.isfinite(c.weight_decay)):
            raise ValueError(f"weight_decay must be a number >= 0, got {c.weight_decay!r}")
        if not 0 < c.lr_factor <= 1:
            raise ValueError(f"lr_factor must lie in (0, 1], got {c.lr_factor!r}")
        if any(not 0 < m < 1 for m in c.lr_milestones):
            raise ValueError(f"lr_milestones are fractions of the run in (0, 1), got {c.lr_milestones}")
        if c.clean_train_eval is not True and c.clean_train_eval is not False:
            if not _is_int(c.clean_train_eval) or c.clean_train_eval < 0:
                raise ValueError(f"clean_train_eval must be true, false or a number of epochs >= 1, "
                                 f"got {c.clean_train_eval!r}")
            # 0 and 1 compute what False and True do: one identity (and run id) for each
            c.clean_train_eval = bool(c.clean_train_eval) if c.clean_train_eval <= 1 else int(c.clean_train_eval)
        if c.calibration_bins is not None and not (_is_int(c.calibration_bins) and c.calibration_bins >= 2):
            raise ValueError(f"calibration_bins must be an integer >= 2 or None, got {c.calibration_bins!r}")
        if c.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {c.precision!r}")
        if not (isinstance(c.compile, bool) or c.compile in COMPILE_MODES):
            raise ValueError(f"compile must be true, false or one of {', '.join(COMPILE_MODES)}, "
                             f"got {c.compile!r}")
        object.__setattr__(c, "_is_resolved", True)  # dataclasses.replace() drops it again
        return c

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (resolved), as JSON-able values. Fields
        left at None are omitted, so adding an optional field later keeps old run ids."""
        d = {k: v for k, v in dataclasses.asdict(self.resolved()).items() if v is not None}
        for name in EXECUTION_FIELDS:
            d.pop(name)
        d["lr_milestones"] = list(d["lr_milestones"])
        return d

    def run_id(self) -> str:
        """A readable name plus 12 hex digits of the identity's hash, e.g. 'ccql-random25-wrn28-10-<hash>'."""
        ident = self.identity()
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        subset = ident["classes"] if isinstance(ident["classes"], str) else "custom"
        return f"{ident['loss']}-{subset}{ident['num_classes']}-wrn{ident['depth']}-{ident['width']}-{digest}"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Inverse of dataclasses.asdict; unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(names)}")
        return cls(**d)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based `epoch`: lr * lr_factor ** (milestones passed). Milestone fraction
    f falls after epoch max(1, round-half-up(f * epochs)): with 200 epochs after epochs 50, 80,
    110, 150 and 170 (the paper's schedule); a short run's first epoch keeps the initial LR."""
    passed = sum(epoch >= max(1, math.floor(f * config.epochs + 0.5)) for f in config.lr_milestones)
    return config.lr * config.lr_factor ** passed


def clean_eval_due(config: TrainConfig, epoch: int) -> bool:
    """Whether 0-based `epoch` ends with a pass over the un-augmented training set
    (`clean_train_eval`: True every epoch, N every N epochs and the last one)."""
    every = config.clean_train_eval
    if every is False:
        return False
    return every is True or (epoch + 1) % every == 0 or epoch + 1 == config.epochs


def resolve_device(name: str):
    """'auto' -> cuda if available, else cpu. ValueError for an unknown device or absent CUDA."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    return device
