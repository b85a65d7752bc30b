"""Several runs of one shape trained as one program: how sweeps of small models fill a GPU.

A small run's step is bound by kernel launches, not arithmetic. Stacking N models makes every
convolution one grouped convolution (groups = N), every BatchNorm one over N x C channels and the
classifiers one batched matmul; model n reads channels 3n..3n+2 of the input. The parameters are
disjoint, so the sum of the N losses gives each model exactly its own gradient: the stack computes
the same N functions as N separate models (up to the order of float sums), with one launch per
layer instead of N (the gains measured: DEFAULT_STACK).

Each run keeps its own `Trainer` (config, classes, data order and augmentation, loss, LR, history,
checkpoint); one `loader.StackedLoader` makes the N runs' batches. The stack takes their weights
and momentum buffers at the start and gives them back before each checkpoint, so a stacked run's
checkpoint is a plain run's and a run can be resumed alone or in a stack. The runs may differ in
PER_RUN_FIELDS only (`stack_key`). Dropout, if any, draws from the shared global RNG: the one thing
that is not the same draw as a run trained alone.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Callable

import torch
from torch import nn

from .config import TrainConfig, clean_eval_due, lr_at_epoch, resolve_device
from .loader import StackedLoader
from .losses import at_least_float32
from ..progress import EpochProgress
from .train import EpochSums, RunDiverged, Trainer, compiled_forward, run_pass
from .wrn import WideResNet, count_parameters

# The fields a stack's runs may differ in; the rest of TrainConfig must agree.
PER_RUN_FIELDS = ("loss", "loss_options", "loss_code", "lr", "seed", "classes", "class_seed")
# Most runs stacked by default on a GPU, for models under SMALL_MODEL_PARAMETERS. Bare loops:
# WRN-10-1 gains 10.4x at 32, 11.2x at 64 (benchmarks/results/gpu_round3-h200-2026-11-27.md);
# WRN-16-2 7.7x at 32, 8.0x at 64; the real `quick` sweep of 30 WRN-10-1 runs 12.5x
# (benchmarks/results/gpu_round4-h200-2026-11-28.md). A WRN-28-10 run fills the GPU alone.
DEFAULT_STACK, SMALL_MODEL_PARAMETERS = 32, 1_000_000


def stack_key(config: TrainConfig) -> tuple:
    """Runs with equal keys can be stacked (resolved configs; the execution fields count too)."""
    d = {k: v for k, v in vars(config.resolved()).items()
         if k not in PER_RUN_FIELDS and not k.startswith("_")}
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def default_stack(config: TrainConfig, cuda: bool | None = None) -> int:
    """DEFAULT_STACK for a model under SMALL_MODEL_PARAMETERS on a GPU (cuda None: whether
    `config.device` means one here), else 1: a CPU has no launches to save and runs grouped
    convolutions slower (4 stacked WRN-10-1 trained at 0.77x one model's images/s with
    benchmarks/bench.py's `stacked` part on a CPU; docs/scale.md, on stacking)."""
    c = config.resolved()
    if cuda is None:
        cuda = resolve_device(c.device).type == "cuda"
    if not cuda:
        return 1
    with torch.device("meta"):
        parameters = count_parameters(WideResNet(c.depth, c.width, c.num_classes))
    return DEFAULT_STACK if parameters < SMALL_MODEL_PARAMETERS else 1


def plan_stacks(configs: dict[str, TrainConfig], most: int | None,
                cuda: bool | None = None) -> list[list[str]]:
    """The labels of `configs` in stacks of at most `most` (None: `default_stack(config, cuda)`)
    runs with equal `stack_key`, in order of first appearance."""
    if most is not None and (int(most) != most or most < 1):
        raise ValueError(f"runs per stack must be an integer >= 1, got {most!r}")
    by_key: dict[tuple, list[str]] = {}
    for label, config in configs.items():
        by_key.setdefault(stack_key(config), []).append(label)
    stacks = []
    for labels in by_key.values():
        size = int(most) if most is not None else default_stack(configs[labels[0]], cuda)
        stacks += [labels[i:i + size] for i in range(0, len(labels), size)]
    return stacks


class StackedLinear(nn.Module):
    """N linear layers at once: input [B, N * C] -> output [B, N, K]; weight [N, K, C], bias [N, K]."""

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], self.weight.shape[0], -1)
        return torch.einsum("bnc,nkc->bnk", x, self.weight) + self.bias


def stack_models(models: list[nn.Module]) -> nn.Module:
    """One module computing N models of one architecture (Conv2d without bias, BatchNorm2d, Linear
    and parameter-free layers): input [B, N * 3, H, W], output [B, N, K]. Every stacked tensor is
    the models' tensors stacked along a new first dimension and reshaped (`unstack_tensor`)."""
    n, stacked = len(models), copy.deepcopy(models[0])
    for name, module in models[0].named_modules():
        if isinstance(module, nn.Conv2d):
            if module.bias is not None or module.groups != 1:
                raise ValueError(f"{name}: only ungrouped convolutions without bias can be stacked")
            new = nn.Conv2d(n * module.in_channels, n * module.out_channels, module.kernel_size,
                            module.stride, module.padding, groups=n, bias=False)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(n * module.num_features, module.eps, module.momentum)
        elif isinstance(module, nn.Linear):
            new = StackedLinear(n, module.in_features, module.out_features)
        else:
            continue
        parent, _, leaf = name.rpartition(".")
        setattr(stacked.get_submodule(parent) if parent else stacked, leaf, new)
    like = next(models[0].parameters())
    stacked.to(like.device, like.dtype)
    states = [m.state_dict() for m in models]
    stacked.load_state_dict({name: stack_tensors([s[name] for s in states], like)
                             for name, like in stacked.state_dict().items()})
    return stacked


def stack_tensors(tensors: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """N per-model tensors as one tensor shaped `like`; counters shared by all (BatchNorm's
    num_batches_tracked) are taken from the first."""
    if like.numel() == tensors[0].numel():
        return tensors[0]
    return torch.stack(tensors).reshape(like.shape)


def unstack_tensor(stacked: torch.Tensor, n: int, index: int, like: torch.Tensor) -> torch.Tensor:
    """Model `index`'s part of a stacked tensor, shaped `like` (inverse of `stack_tensors`)."""
    if stacked.numel() == like.numel():
        return stacked
    return stacked.reshape(n, *like.shape)[index]


class StackedSGD:
    """SGD with momentum, weight decay and Nesterov as torch.optim.SGD computes it (dampening 0),
    with each model's own LR: the step of model n's slice of every parameter is scaled by lrs[n]."""

    def __init__(self, params: list[nn.Parameter], momentum_buffers: list[torch.Tensor], n: int,
                 momentum: float, weight_decay: float, nesterov: bool):
        self.params, self.buffers, self.n = params, momentum_buffers, n
        self.momentum, self.weight_decay, self.nesterov = momentum, weight_decay, nesterov
        # model index of each row (first dimension) of each parameter
        self.rows = [torch.arange(p.shape[0], device=p.device) // (p.shape[0] // n) for p in params]
        self.lr_views = None

    def set_lrs(self, lrs: list[float]) -> None:
        """One LR per model (a diverged model gets 0)."""
        lrs = torch.tensor(lrs, dtype=self.params[0].dtype, device=self.params[0].device)
        self.lr_views = [lrs[r].view(-1, *[1] * (p.dim() - 1)) for r, p in zip(self.rows, self.params)]

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad for p in self.params]
        d = torch._foreach_add(grads, self.params, alpha=self.weight_decay)
        torch._foreach_mul_(self.buffers, self.momentum)
        torch._foreach_add_(self.buffers, d)
        if self.nesterov:
            torch._foreach_add_(d, self.buffers, alpha=self.momentum)
        else:
            d = self.buffers
        torch._foreach_sub_(self.params, torch._foreach_mul(d, self.lr_views))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


class StackedTrainer:
    """Trains the runs of `trainers` (equal `stack_key`, equal epochs done) as one stacked model.
    on_diverged(index, exc) is called when run `index` diverges (its row recorded as a plain run's
    is); the others go on. `run()` returns when every run finished or diverged."""

    def __init__(self, trainers: list[Trainer], progress=None, name: str = "",
                 on_diverged: Callable[[int, RunDiverged], None] | None = None):
        if len({stack_key(t.config) for t in trainers}) != 1:
            raise ValueError("stacked runs must agree in every field but " + ", ".join(PER_RUN_FIELDS))
        if len({len(t.history) for t in trainers}) != 1:
            raise ValueError("stacked runs must have finished the same number of epochs")
        self.trainers, self.n = trainers, len(trainers)
        self.on_diverged, self.progress, self.name = on_diverged, progress, name
        first = trainers[0]
        self.config, self.device, self._autocast = first.config, first.device, first._autocast
        self.model = stack_models([t.model for t in trainers])
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model_fn = compiled_forward(self.model, self.config.compile)
        buffers = []  # each run's momentum (zeros before its first step), stacked like its weights
        for name, p in self.model.named_parameters():
            own = [(t.optimizer.state.get(q, {}), q) for t in trainers for q in [t.model.get_parameter(name)]]
            buffers.append(stack_tensors([state.get("momentum_buffer", torch.zeros_like(q))
                                          for state, q in own], p).clone())
        c = self.config
        self.optimizer = StackedSGD(list(self.model.parameters()), buffers, self.n, c.momentum,
                                    c.weight_decay, c.nesterov)
        # runs with the same loss (and options) are evaluated by one call
        groups: dict[str, list[int]] = {}
        for i, t in enumerate(trainers):
            groups.setdefault(repr((t.config.loss, sorted(t.config.loss_options.items()))), []).append(i)
        self.loss_groups = [(trainers[idx[0]].loss_fn, torch.tensor(idx, device=self.device))
                            for idx in groups.values()]
        self.live = [True] * self.n
        # the runs' batches stacked: [B, 3N, 32, 32] images and [B, N] labels
        self.loaders = {split: StackedLoader([getattr(t, f"{split}_loader") for t in trainers])
                        for split in ("train", "test")}

    def _losses(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each model's batch-mean loss [N] from outputs [B, N, K] and labels [B, N]."""
        outputs = at_least_float32(outputs)
        losses = outputs.new_zeros(self.n)
        for loss_fn, idx in self.loss_groups:
            losses = losses.index_put((idx,), loss_fn.batch_means(outputs[:, idx], labels[:, idx]))
        return losses

    def train_epoch(self, epoch: int):
        """One augmented pass of every run; ([mean loss] * N, [accuracy] * N)."""
        self.optimizer.set_lrs([lr_at_epoch(t.config, epoch) if live else 0.0
                                for t, live in zip(self.trainers, self.live)])
        live = torch.tensor(self.live, device=self.device)
        self.model.train()
        batches = self.loaders["train"].train_batches(epoch, self.config.batch_size)
        sums = EpochSums.zeros(self.device, (self.n,))
        # the sum of the live runs' losses: a diverged model gets no gradient
        return run_pass(self, batches, sums, lambda losses: torch.where(live, losses, 0.0).sum())

    @torch.no_grad()
    def evaluate(self, split: str):
        """([mean loss] * N, [accuracy] * N) over each run's `split` ('test' or 'train') in eval mode,
        and [ECE] * N for the test split of runs with calibration_bins (equal within a stack)."""
        bins = self.config.calibration_bins if split == "test" else None
        self.model.eval()
        batches = self.loaders[split].eval_batches(self.config.eval_batch_size)
        return run_pass(self, batches, EpochSums.zeros(self.device, (self.n,), bins))

    def give_back(self) -> None:
        """Copy the stack's weights, BatchNorm statistics and momentum buffers into each run's own
        model and optimizer (what its checkpoint saves)."""
        state = self.model.state_dict()
        for i, t in enumerate(self.trainers):
            own = t.model.state_dict()
            t.model.load_state_dict({k: unstack_tensor(v, self.n, i, own[k]) for k, v in state.items()})
            for (name, _), buffer in zip(self.model.named_parameters(), self.optimizer.buffers):
                q = t.model.get_parameter(name)
                t.optimizer.state[q]["momentum_buffer"] = unstack_tensor(buffer, self.n, i, q).clone()

    def run(self) -> None:
        c = self.config
        display = EpochProgress(self.progress, self.name, c.epochs, done=len(self.trainers[0].history))
        for epoch in range(len(self.trainers[0].history), c.epochs):
            if not any(self.live):
                break
            start = time.perf_counter()
            train = self.train_epoch(epoch)
            test = self.evaluate("test")
            clean = self.evaluate("train") if clean_eval_due(c, epoch) else None
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            if self.trainers[0].checkpoint_due(epoch):  # equal for all: checkpoint_every stacks alike
                self.give_back()
            for i, t in enumerate(self.trainers):
                if not self.live[i]:
                    continue
                tr = (train[0][i], train[1][i])
                te = tuple(m[i] for m in test) if math.isfinite(tr[0]) else (math.nan,) * 3
                cl = (clean[0][i], clean[1][i]) if clean and math.isfinite(tr[0] + te[0]) else None
                try:
                    t.end_epoch(epoch, tr, te, cl, seconds)
                except RunDiverged as exc:
                    self.live[i] = False
                    if self.on_diverged:
                        self.on_diverged(i, exc)
            if any(self.live):
                display.update(self.trainers[self.live.index(True)].history[-1])
        display.close()
