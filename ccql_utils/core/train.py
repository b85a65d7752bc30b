"""The training loop of one run (SGD, step schedule, checkpoint/resume); config.py defines the run.

An epoch is one pass over the shuffled, augmented training subset, then one over the test subset.
Per epoch the history records (accuracies are fractions; `*_norm`: the loss divided by the loss's
`reference_value`, its value at zero outputs):

    epoch, lr, train_loss, train_acc, test_loss, test_acc, train_loss_norm, test_loss_norm, seconds

`train_loss`/`train_acc` are running averages over the augmented epoch in train mode, as most
papers plot them. `clean_train_eval` adds `train_clean_loss`, `train_clean_acc` (, `_norm`): a
pass over the un-augmented training images in eval mode after the epochs it names (empty on the
others); `calibration_bins` adds `test_ece`, the expected calibration error of the test softmax.
Metrics are summed on the device and read once per pass (no host sync per step).
"""
from __future__ import annotations

import io
import math
import numbers
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from .config import TrainConfig, clean_eval_due, lr_at_epoch, resolve_device
from .data import Cifar100, make_subset, select_classes
from .loader import DeviceLoader
from ..progress import EpochProgress
from .losses import at_least_float32, make_loss
from ..provenance import atomic_write_bytes
from .wrn import WideResNet

# torch.compile's `dynamic`. False: each batch shape (full and last, train and eval) gets its own
# graph. With torch's default (None) the smaller last batch recompiles the forward with a symbolic
# batch size that the later full batches then run: WRN-28-10 at `paper` took 60.1 s (None) against
# 34.5 s (False) for the first epoch, 1.63-1.81 s against 1.60-1.70 s for steady epochs
# (measured: benchmarks/results/gpu_round4-h200-2026-11-28.md).
COMPILE_DYNAMIC = False


def compiled_forward(model: torch.nn.Module, compile: bool | str) -> Callable:
    """`model` itself (compile False), or `model` through torch.compile in mode `compile` (True:
    "default"). With CUDA graphs ("reduce-overhead") each call first marks a new step, so a graph
    replay may reuse the memory of the previous call's outputs (they are read before the next)."""
    if not compile:
        return model
    mode = "default" if compile is True else compile
    forward = torch.compile(model, mode=mode, dynamic=COMPILE_DYNAMIC)
    if mode != "reduce-overhead":
        return forward

    def graphed(images: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        return forward(images)
    return graphed


def plain(value):
    """`value` (dicts, lists, numbers, strings) as the plain Python types that
    torch.load(weights_only=True) accepts: numpy numbers become int or float, tuples lists.
    Anything else is a TypeError when the checkpoint is saved, not a failed resume later."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or type(value) in (str, bool, int, float) or isinstance(value, torch.Tensor):
        return value
    for kind, cast in ((np.bool_, bool), (numbers.Integral, int), (numbers.Real, float)):
        if isinstance(value, kind):
            return cast(value)
    raise TypeError(f"a checkpoint holds only tensors and plain values, not {type(value).__name__}")


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A checkpoint's state, unpickled with torch.load(weights_only=True): tensors and plain
    values only, so a planted or foreign file cannot run code (pickle.UnpicklingError instead)."""
    return torch.load(path, map_location=map_location, weights_only=True)


class RunError(RuntimeError):
    """A run cannot go on as stored (unreadable or foreign checkpoint, inconsistent files, no
    space); the message is one line naming the file and what to do."""


class RunDiverged(RuntimeError):
    """A non-finite loss stopped the run."""


@dataclass
class EpochSums:
    """Sums and counts of one pass, kept on the device (read once per pass). One run:
    scalars; N stacked runs (stacked.py): vectors [N]."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    count: int = 0
    calibration: torch.Tensor | None = None  # per bin of max softmax: [3 (count, confidence, hits), *runs, bins]

    @classmethod
    def zeros(cls, device, runs: tuple = (), bins: int | None = None) -> "EpochSums":
        return cls(torch.zeros(runs, device=device, dtype=torch.float64),
                   torch.zeros(runs, device=device, dtype=torch.int64),
                   calibration=torch.zeros((3, *runs, bins), device=device, dtype=torch.float64) if bins else None)

    def add(self, batch_mean_loss: torch.Tensor, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """batch_mean_loss [] or [N]; outputs [B, K] or [B, N, K]; labels [B] or [B, N]."""
        n = labels.shape[0]
        self.loss_sum += batch_mean_loss.detach().double() * n
        self.correct += (outputs.detach().argmax(-1) == labels).sum(0)
        self.count += n
        if self.calibration is not None:
            bins = self.calibration.shape[-1]
            confidence, predicted = outputs.detach().double().softmax(-1).max(-1)
            in_bin = torch.nn.functional.one_hot((confidence * bins).long().clamp(max=bins - 1), bins).double()
            self.calibration += torch.stack([in_bin.sum(0), (in_bin * confidence[..., None]).sum(0),
                                             (in_bin * (predicted == labels)[..., None]).sum(0)])

    def ece(self):
        """The expected calibration error of the softmax of the outputs (Guo et al., ICML 2017):
        sum over equal-width confidence bins of |confidence - accuracy| weighted by the bin's share."""
        return ((self.calibration[1] - self.calibration[2]).abs().sum(-1) / self.count).tolist()

    def read(self):
        """(mean loss, accuracy as a fraction), floats or lists of N: the one host sync of a pass.
        Where the loss is not finite the accuracy is NaN too: argmax over NaN outputs picks class 0,
        a chance-level number that no model earned."""
        loss = self.loss_sum / self.count
        acc = torch.where(torch.isfinite(loss), self.correct.double() / self.count, torch.nan)
        return loss.tolist(), acc.tolist()


def run_pass(runner, batches, sums: EpochSums, objective: Callable | None = None) -> tuple:
    """One pass of a Trainer or StackedTrainer over `batches`: sums.read() (and the ECE with
    calibration bins). With `objective` (the batch's losses -> the scalar to differentiate), a
    training pass: one SGD step per batch."""
    for images, labels in batches:
        with runner._autocast():
            outputs = runner.model_fn(images)
        losses = runner._losses(outputs, labels)
        if objective is not None:
            runner.optimizer.zero_grad()
            objective(losses).backward()
            runner.optimizer.step()
        sums.add(losses, outputs, labels)
    return (*sums.read(), sums.ece()) if sums.calibration is not None else sums.read()


class Trainer:
    """Trains one run in `run_dir`, resuming from its checkpoint if one is there. on_epoch(history)
    is called after each epoch with the history so far (the run store writes metrics.csv from it);
    progress and name: the per-epoch display (progress.py) and its label."""

    def __init__(self, config: TrainConfig, data: Cifar100, run_dir: str | Path,
                 progress: bool | str | None = None, name: str | None = None,
                 on_epoch: Callable[[list[dict]], None] | None = None):
        self.config = c = config.resolved()
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.on_epoch = on_epoch
        self.name = name or c.run_id()
        self.device = resolve_device(c.device)
        cuda = self.device.type == "cuda"
        self.use_bf16 = c.precision == "bf16" or (c.precision == "auto" and cuda)
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
        self.model_fn = compiled_forward(self.model, c.compile)
        self.loss_fn = make_loss(c.loss, c.num_classes, validate=False, **c.loss_options)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.lr, momentum=c.momentum,
                                         weight_decay=c.weight_decay, nesterov=c.nesterov)
        self.history: list[dict] = []
        self.checkpointed_epochs = 0
        # What the run store records in config.json (kept in the checkpoint to rebuild it).
        self.record = {"run_id": c.run_id(), "config": c.identity(),
                       "class_names": self.class_names, "class_indices": list(self.class_indices),
                       "data_folder": data.folder}
        self._resume()

    # ------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def _save_checkpoint(self) -> None:
        """Write the checkpoint atomically, serialised in memory first: a full disk is then an
        OSError of a plain write (torch.save's is an opaque RuntimeError) and the previous
        checkpoint stays intact. Tensors and plain values only (`plain`, `load_checkpoint`)."""
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "history": plain(self.history), "identity": plain(self.config.identity()),
                 "record": plain(self.record), "cpu_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        try:
            atomic_write_bytes(self.checkpoint_path, buffer.getbuffer())
        except OSError as exc:
            raise RunError(f"could not write {self.checkpoint_path} ({exc.strerror or exc}); the "
                           f"checkpoint of epoch {self.checkpointed_epochs} is intact: free space "
                           f"or fix permissions, then rerun the same command to resume") from exc
        self.checkpointed_epochs = len(self.history)

    def _resume(self) -> None:
        if not self.checkpoint_path.exists():
            return
        try:
            state = load_checkpoint(self.checkpoint_path, self.device)
            history, identity = list(state["history"]), state["identity"]
        except pickle.UnpicklingError:  # objects other than tensors and plain values: never built
            raise RunError(f"{self.checkpoint_path} holds objects other than tensors and plain "
                           f"values (an older version's checkpoint, or not one at all) and is not "
                           f"loaded; delete it to restart this run from epoch 1") from None
        except Exception as exc:  # truncated, overwritten or not a checkpoint at all
            raise RunError(f"{self.checkpoint_path} is unreadable ({type(exc).__name__}); delete it "
                           f"to restart this run from epoch 1") from None
        if identity != self.config.identity():
            raise RunError(f"{self.checkpoint_path} belongs to a different configuration; delete "
                           f"the run folder or use another runs folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = history
        self.checkpointed_epochs = len(history)
        torch.set_rng_state(state["cpu_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # ------------------------------------------------------------------ passes
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def _losses(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(at_least_float32(outputs), labels)

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One augmented pass in train mode; returns (mean loss, accuracy) as running averages."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at_epoch(self.config, epoch)
        self.model.train()
        batches = self.train_loader.train_batches(epoch, self.config.batch_size)
        return run_pass(self, batches, EpochSums.zeros(self.device), objective=lambda loss: loss)

    @torch.no_grad()
    def evaluate(self, loader: DeviceLoader, bins: int | None = None) -> tuple:
        """(mean loss, accuracy) over `loader` in eval mode, no augmentation; with `bins`, the
        expected calibration error over that many bins as a third number."""
        self.model.eval()
        batches = loader.eval_batches(self.config.eval_batch_size)
        return run_pass(self, batches, EpochSums.zeros(self.device, bins=bins))

    @torch.no_grad()
    def output_means(self) -> dict[str, float]:
        """Mean test-set output of the model on the correct class and on the other classes (eval
        mode): near 1 on both is the all-ones output the paper reports for a very large CCQL w."""
        self.model.eval()
        correct = total = 0.0
        count, k = 0, self.config.num_classes
        for images, labels in self.test_loader.eval_batches(self.config.eval_batch_size):
            with self._autocast():
                outputs = self.model_fn(images).float()
            correct += outputs.gather(1, labels[:, None]).sum().item()
            total += outputs.sum().item()
            count += len(labels)
        return {"correct_class_output": correct / count,
                "wrong_class_output": (total - correct) / (count * (k - 1))}

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict]:
        """Train the remaining epochs. Returns the history; raises RunDiverged on a non-finite loss."""
        c = self.config
        display = EpochProgress(self.progress, self.name, c.epochs, done=len(self.history))
        for epoch in range(len(self.history), c.epochs):
            start = time.perf_counter()
            train = self.train_epoch(epoch)
            test = (self.evaluate(self.test_loader, c.calibration_bins) if math.isfinite(train[0])
                    else (math.nan, math.nan, math.nan))
            clean = (self.evaluate(self.train_loader)
                     if clean_eval_due(c, epoch) and math.isfinite(train[0] + test[0]) else None)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            self.end_epoch(epoch, train, test, clean, time.perf_counter() - start)
            display.update(self.history[-1])
        display.close()
        return self.history

    def checkpoint_due(self, epoch: int) -> bool:
        """Whether 0-based `epoch` ends with a checkpoint: every checkpoint_every, and the last."""
        return epoch + 1 == self.config.epochs or (epoch + 1) % self.config.checkpoint_every == 0

    def end_epoch(self, epoch: int, train: tuple, test: tuple, clean: tuple | None,
                  seconds: float) -> None:
        """Record epoch `epoch`'s (loss, accuracy) pairs, checkpoint when due, call on_epoch.
        Raises RunDiverged (after recording the row) when the train or test loss is not finite."""
        c, reference = self.config, self.loss_fn.reference_value
        row = {"epoch": epoch + 1, "lr": lr_at_epoch(c, epoch), "train_loss": train[0],
               "train_acc": train[1], "test_loss": test[0], "test_acc": test[1],
               "train_loss_norm": train[0] / reference, "test_loss_norm": test[0] / reference}
        if c.calibration_bins:
            row["test_ece"] = test[2]
        if clean is not None:
            row.update(train_clean_loss=clean[0], train_clean_acc=clean[1],
                       train_clean_loss_norm=clean[0] / reference)
        row["seconds"] = seconds
        self.history.append(row)
        if not math.isfinite(train[0] + test[0]):
            if self.on_epoch:
                self.on_epoch(self.history)
            raise RunDiverged(f"non-finite loss in epoch {epoch + 1} (train {train[0]}, "
                              f"test {test[0]}); lower the learning rate")
        if self.checkpoint_due(epoch):
            self._save_checkpoint()
        if self.on_epoch:
            self.on_epoch(self.history)
