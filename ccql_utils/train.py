"""The run configuration and the training loop (SGD, step schedule, checkpoint/resume).

One epoch = one pass over this rank's share of the shuffled, augmented training subset, then
one pass over the test subset. Per epoch the history records (accuracies are fractions):

    epoch, lr, train_loss, train_acc, test_loss, test_acc, train_loss_norm, test_loss_norm, seconds

`train_loss`/`train_acc` are running averages over the augmented epoch, in train mode (the
weights change during the epoch), as most papers plot them. With `clean_train_eval=True` the
history also has `train_clean_loss`, `train_clean_acc`(, `_norm`): one extra pass over the
training images without augmentation, in eval mode, after the epoch. `*_norm` = loss divided by
the loss's `reference_value` (its value at zero outputs).

Metrics are accumulated on the device as sums and counts and read once per epoch (no host sync
per step; sums and counts are what a multi-GPU mode would all-reduce).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from .data import SUBSET_KINDS, Cifar100, check_class_names, DeviceLoader, make_subset, select_classes
from .losses import LOSS_NAMES, default_ccql_weight, make_loss
from .wrn import WideResNet

PRECISIONS = ("auto", "fp32", "bf16")
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc",
                  "train_loss_norm", "test_loss_norm", "seconds")
# Fields that say how a run executes, not what it computes: left out of the run's identity.
EXECUTION_FIELDS = ("device", "compile", "checkpoint_every", "eval_batch_size")


@dataclass
class TrainConfig:
    """Everything that defines one training run. Units: lr per SGD step; epochs are full passes."""

    loss: str = "ce"                       # ce | ql | ccql | rescaled_square
    loss_options: dict = field(default_factory=dict)  # ccql: {"w": ...}; rescaled_square: {"k", "M"}
    classes: str | list = "random"         # random | all | mammals | [class names]
    num_classes: int | None = 25           # K (required for random; implied otherwise)
    class_seed: int | None = None          # seed of the random class draw; None: same as seed
    train_per_class: int | None = None     # cap on training images per class (small presets)
    test_per_class: int | None = None      # cap on test images per class (tests only)
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
    precision: str = "auto"                # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    clean_train_eval: bool = False
    dataset: str = "cifar100"              # set to 'unverified-<hash>' for stand-in data
    # execution only (not part of the run's identity)
    device: str = "auto"                   # auto | cpu | cuda | cuda:N
    compile: bool = False                  # torch.compile the model (CUDA)
    checkpoint_every: int = 1              # epochs between checkpoints (always at the end)
    eval_batch_size: int = 1024

    def resolved(self) -> "TrainConfig":
        """A validated copy with defaults filled in (K, class seed, CCQL's w). Raises ValueError."""
        c = dataclasses.replace(self, loss_options=dict(self.loss_options),
                                lr_milestones=tuple(float(m) for m in self.lr_milestones))
        if c.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {c.loss!r}; choose one of {', '.join(LOSS_NAMES)}")
        if isinstance(c.classes, str):
            if c.classes not in SUBSET_KINDS:
                raise ValueError(f"unknown class subset {c.classes!r}; choose one of "
                                 f"{', '.join(SUBSET_KINDS)} or a list of class names")
            implied = {"all": 100, "mammals": 25}.get(c.classes)
            if implied is not None and c.num_classes not in (None, implied):
                raise ValueError(f"classes={c.classes!r} has K = {implied}, got num_classes={c.num_classes}")
            c.num_classes = implied or c.num_classes
            if c.num_classes is None:
                raise ValueError("classes='random' needs num_classes (K)")
        else:
            c.classes = check_class_names([str(n) for n in c.classes])
            if c.num_classes not in (None, len(c.classes)):
                raise ValueError(f"{len(c.classes)} class names given but num_classes={c.num_classes}")
            c.num_classes = len(c.classes)
        if int(c.num_classes) != c.num_classes or not 2 <= c.num_classes <= 100:
            raise ValueError(f"CIFAR-100 allows 2 <= K <= 100 classes, got {c.num_classes}")
        c.class_seed = c.seed if c.class_seed is None else c.class_seed
        if c.loss == "ccql" and c.loss_options.get("w") is None:
            c.loss_options["w"] = default_ccql_weight(c.num_classes)
        make_loss(c.loss, c.num_classes, **c.loss_options)  # validates the options
        for name, value, low in (("epochs", c.epochs, 1), ("batch_size", c.batch_size, 2),
                                 ("checkpoint_every", c.checkpoint_every, 1),
                                 ("eval_batch_size", c.eval_batch_size, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if not (c.lr > 0 and math.isfinite(c.lr)):
            raise ValueError(f"lr must be a positive number, got {c.lr}")
        if c.momentum < 0 or c.weight_decay < 0 or not 0 < c.lr_factor <= 1:
            raise ValueError("momentum and weight_decay must be >= 0 and lr_factor in (0, 1]")
        if any(not 0 < m < 1 for m in c.lr_milestones):
            raise ValueError(f"lr_milestones are fractions of the run in (0, 1), got {c.lr_milestones}")
        if c.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {c.precision!r}")
        _check_model(c)
        return c

    def identity(self) -> dict[str, Any]:
        """The fields that define what the run computes (resolved), as JSON-able values.

        Fields left at None are omitted, so adding an optional field later keeps old run ids.
        """
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


def _check_model(c: TrainConfig) -> None:
    if int(c.depth) != c.depth or c.depth < 10 or (c.depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n + 4 (10, 16, 22, 28, ...), got {c.depth}")
    if int(c.width) != c.width or c.width < 1:
        raise ValueError(f"width (widen factor) must be a positive integer, got {c.width}")
    if not 0 <= c.dropout < 1:
        raise ValueError(f"dropout must lie in [0, 1), got {c.dropout}")


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """Learning rate of 0-based `epoch`: lr * lr_factor ** (milestones passed).

    Milestone fraction f falls after epoch max(1, round-half-up(f * epochs)): with 200 epochs
    the LR is divided by 4 after epochs 50, 80, 110, 150 and 170 (the paper's schedule); the
    first epoch of a short run always uses the initial LR.
    """
    passed = sum(epoch >= max(1, math.floor(f * config.epochs + 0.5)) for f in config.lr_milestones)
    return config.lr * config.lr_factor ** passed


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available, else cpu; errors clearly for CUDA on a CPU-only machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but no CUDA GPU is available; use --device cpu")
    return device


class RunDiverged(RuntimeError):
    """A non-finite loss stopped the run."""


@dataclass
class EpochSums:
    """Sums and counts of one pass, kept on the device (all-reducible for multi-GPU)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int = 0

    @classmethod
    def zeros(cls, device) -> "EpochSums":
        return cls(torch.zeros((), device=device, dtype=torch.float64),
                   torch.zeros((), device=device, dtype=torch.int64))

    def add(self, batch_mean_loss: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        self.loss_sum += batch_mean_loss.detach().double() * n
        self.correct += (outputs.detach().argmax(1) == labels).sum()
        self.count += n

    def read(self) -> tuple[float, float]:
        """(mean loss, accuracy as a fraction): the one host sync of a pass."""
        return self.loss_sum.item() / self.count, self.correct.item() / self.count


class Trainer:
    """Trains one run in `run_dir`, resuming from its checkpoint if one is there.

    data: the loaded CIFAR-100 (see data.load_cifar100). on_epoch(history) is called after each
    epoch with the history so far (the run store writes metrics.csv from it). progress: one line
    per epoch on stderr, plus a per-batch bar when stderr is a terminal (None: only then).
    """

    def __init__(self, config: TrainConfig, data: Cifar100, run_dir: str | Path,
                 progress: bool | None = None,
                 on_epoch: Callable[[list[dict]], None] | None = None):
        self.config = config.resolved()
        self.run_dir = Path(run_dir)
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.on_epoch = on_epoch
        c = self.config
        self.device = resolve_device(c.device)
        self.use_bf16 = c.precision == "bf16" or (c.precision == "auto" and self.device.type == "cuda")
        cuda = self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        else:
            # Late in the schedule (tiny LR) momentum buffers decay into subnormal floats,
            # which run ~10x slower on x86 CPUs; flushing them to zero costs no accuracy.
            torch.set_flush_denormal(True)

        self.class_indices = select_classes(c.classes, data, c.num_classes, c.class_seed)
        subset = make_subset(data, self.class_indices, c.train_per_class, c.test_per_class)
        self.class_names = list(subset.class_names)
        self.train_loader = DeviceLoader(subset.train_images, subset.train_labels, self.device,
                                         seed=c.seed, channels_last=cuda)
        self.test_loader = DeviceLoader(subset.test_images, subset.test_labels, self.device,
                                        seed=c.seed, channels_last=cuda)

        torch.manual_seed(c.seed)
        self.model = WideResNet(c.depth, c.width, c.num_classes, c.dropout).to(self.device)
        if cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if c.compile else self.model
        self.loss_fn = make_loss(c.loss, c.num_classes, validate=False, **c.loss_options)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum,
                                         weight_decay=c.weight_decay, nesterov=c.nesterov)
        self.history: list[dict] = []
        self._resume()

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _save_checkpoint(self) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "history": self.history, "identity": self.config.identity(),
                 "cpu_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        tmp = self.checkpoint_path.with_name(f".checkpoint.{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        if state["identity"] != self.config.identity():
            raise RuntimeError(f"{self.checkpoint_path} belongs to a different configuration; "
                               f"remove it or use another runs folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = list(state["history"])
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # ------------------------------------------------------------------ passes
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One augmented pass in train mode; returns (mean loss, accuracy) as running averages."""
        c = self.config
        lr = lr_at_epoch(c, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        sums = EpochSums.zeros(self.device)
        num_batches = math.ceil(len(self.train_loader) / c.batch_size)
        batches = self.train_loader.train_batches(epoch, c.batch_size)
        if self.progress and sys.stderr.isatty():  # a bar in terminals; per-epoch lines anywhere
            from tqdm import tqdm
            batches = tqdm(batches, total=num_batches, leave=False, file=sys.stderr,
                           desc=f"epoch {epoch + 1}/{c.epochs}", dynamic_ncols=True)
        for images, labels in batches:
            with self._autocast():
                outputs = self.forward(images)
            loss = self.loss_fn(outputs.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            sums.add(loss, outputs, labels)
        return sums.read()

    @torch.no_grad()
    def evaluate(self, loader: DeviceLoader) -> tuple[float, float]:
        """(mean loss, accuracy) over `loader` in eval mode, no augmentation."""
        self.model.eval()
        sums = EpochSums.zeros(self.device)
        for images, labels in loader.eval_batches(self.config.eval_batch_size):
            with self._autocast():
                outputs = self.forward(images)
            sums.add(self.loss_fn(outputs.float(), labels), outputs, labels)
        return sums.read()

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict]:
        """Train the remaining epochs. Returns the history; raises RunDiverged on a non-finite loss."""
        c = self.config
        reference = self.loss_fn.reference_value
        for epoch in range(len(self.history), c.epochs):
            start = time.perf_counter()
            train_loss, train_acc = self.train_epoch(epoch)
            row = {"epoch": epoch + 1, "lr": lr_at_epoch(c, epoch),
                   "train_loss": train_loss, "train_acc": train_acc}
            finite = math.isfinite(train_loss)
            if finite:
                row["test_loss"], row["test_acc"] = self.evaluate(self.test_loader)
                finite = math.isfinite(row["test_loss"])
            else:
                row["test_loss"], row["test_acc"] = float("nan"), float("nan")
            row["train_loss_norm"] = train_loss / reference
            row["test_loss_norm"] = row["test_loss"] / reference
            if c.clean_train_eval and finite:
                loss, acc = self.evaluate(self.train_loader)
                row.update(train_clean_loss=loss, train_clean_acc=acc,
                           train_clean_loss_norm=loss / reference)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            row["seconds"] = time.perf_counter() - start
            self.history.append(row)
            if not finite:
                if self.on_epoch:
                    self.on_epoch(self.history)
                raise RunDiverged(f"non-finite loss in epoch {epoch + 1} (train {train_loss}, "
                                  f"test {row['test_loss']}); lower the learning rate")
            done = epoch + 1 == c.epochs
            if done or (epoch + 1) % c.checkpoint_every == 0:
                self._save_checkpoint()
            if self.on_epoch:
                self.on_epoch(self.history)
            if self.progress:
                print(f"epoch {epoch + 1}/{c.epochs}  lr {row['lr']:.4g}  train loss "
                      f"{train_loss:.4f} acc {train_acc:.3f}  test loss {row['test_loss']:.4f} "
                      f"acc {row['test_acc']:.3f}  {row['seconds']:.1f}s", file=sys.stderr)
        return self.history
