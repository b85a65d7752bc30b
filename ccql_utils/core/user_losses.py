"""Bring your own loss: a function of (outputs, labels) registered under a name trains wherever a
built-in loss does.

    def my_loss(outputs, labels, beta=0.5):
        ce = torch.nn.functional.cross_entropy(outputs, labels)
        return ce + beta * outputs.pow(2).mean()

    register_loss("my_loss", my_loss, label="CE + beta |f|^2", beta=0.5)

Then `TrainConfig(loss="my_loss")`, `python -m ccql_utils train --loss my_loss --loss-module
my_losses.py` and the loss-zoo figure (`FIGURES["loss_zoo"].run(losses=[..., "my_loss"])`) use it.
A run's identity holds the loss's parameters and the hash of its source (`loss_code`), so an
edited function trains new runs; the Ray executor ships the registered function to its workers.
"""
from __future__ import annotations

import hashlib
import inspect
import math

import torch

from .losses import BUILT_IN, LOSSES, LossSpec, _ClassificationLoss, at_least_float32


class FunctionLoss(_ClassificationLoss):
    """A user's loss (`register_loss`): `fn(outputs [B, K], labels [B], **params)` returns the batch
    mean, a scalar tensor. Every instance first tries `fn` on random outputs and refuses, in one
    line, a loss that raises, returns a non-scalar or a non-finite value, or gives no gradient."""

    fn = staticmethod(lambda outputs, labels: None)
    params: dict = {}
    reference = None

    def __init__(self, num_classes: int, validate: bool = True, **params):
        super().__init__(num_classes, validate)
        self.kwargs = {**self.params, **params}
        for key, value in self.kwargs.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"loss {self.name!r}: parameter {key} must be a finite number, got {value!r}")
        self._check()
        ref = self.reference
        ref = ref(self.num_classes, **self.kwargs) if callable(ref) else ref
        if ref is None:  # the built-in losses' reference: the loss at all-zero outputs
            with torch.no_grad():
                ref = float(self.fn(torch.zeros(self.num_classes, self.num_classes),
                                    torch.arange(self.num_classes), **self.kwargs))
        if not (math.isfinite(ref) and ref > 0):
            what = "its value at zero outputs" if self.reference is None else "its reference"
            raise ValueError(f"loss {self.name!r}: {what} is {ref:g}, which cannot normalize it; pass "
                             f"reference= (a positive number or a function of K) to register_loss")
        self._reference = float(ref)

    def _check(self) -> None:
        k = self.num_classes
        outputs = torch.randn(8, k, generator=torch.Generator().manual_seed(0)).requires_grad_()
        refuse = f"loss {self.name!r} is refused: on random outputs [8, {k}] it"
        try:
            value = self.fn(outputs, torch.arange(8) % k, **self.kwargs)
        except Exception as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise ValueError(f"{refuse} raised {type(exc).__name__}: {first_line}") from None
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            raise ValueError(f"{refuse} returned {getattr(value, 'shape', type(value).__name__)}, "
                             f"not a scalar tensor (return the batch mean)")
        if not torch.isfinite(value):
            raise ValueError(f"{refuse} returned {value.item()}")
        grad = torch.autograd.grad(value, outputs, allow_unused=True)[0] if value.requires_grad else None
        if grad is None or not torch.isfinite(grad).all() or not grad.abs().sum() > 0:
            raise ValueError(f"{refuse} gives no (finite, non-zero) gradient with respect to the outputs")

    @property
    def reference_value(self) -> float:
        return self._reference

    def batch_mean(self, outputs, labels):
        return self.fn(at_least_float32(outputs), labels, **self.kwargs)

    def batch_means(self, outputs, labels):
        outputs = at_least_float32(outputs)
        return torch.stack([self.fn(outputs[:, i], labels[:, i].long(), **self.kwargs)
                            for i in range(labels.shape[1])])

    def extra_repr(self) -> str:
        return ", ".join([f"num_classes={self.num_classes}", *(f"{k}={v:g}" for k, v in self.kwargs.items())])


def source_hash(fn) -> str:
    """12 hex digits of the sha256 of `fn`'s source (of its code object where the source is not
    available): a run's identity includes it, so editing a loss never reuses its old runs."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__call__", None), "__code__", None)
        text = repr((code.co_code, code.co_consts, code.co_names)) if code else repr(fn)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def register_loss(name: str, fn, *, label: str | None = None, colour: str = "tab:grey",
                  reference=None, lr_like: str = "ce", lr_scale: float = 1.0, **params) -> LossSpec:
    """Make `fn(outputs, labels, **params)` (batch mean) a loss called `name` that trains wherever
    a built-in one does (`train`, the presets, the figures, the LR probe, stacking, Ray).

    params: its named float parameters and their defaults (a run may set others through
    `loss_options`). reference: what normalizes it (a number, or a function of K and the params);
    default: its value at all-zero outputs, as for the built-in losses. lr_like, lr_scale: its
    probes try the built-in `lr_like`'s LR grid times `lr_scale`. Registering a name again
    replaces a user loss (a built-in one is refused); the run id follows the code (`source_hash`).
    """
    if not isinstance(name, str) or not name.isidentifier() or name in BUILT_IN:
        raise ValueError(f"a loss needs a new name made of letters, digits and _; {name!r} is not one")
    if not callable(fn):
        raise ValueError(f"loss {name!r}: fn must be a function of (outputs, labels, **params)")
    if lr_like not in BUILT_IN or not lr_scale > 0:
        raise ValueError(f"lr_like must be one of {', '.join(BUILT_IN)} and lr_scale > 0")
    cls = type(f"UserLoss_{name}", (FunctionLoss,), {
        "name": name, "fn": staticmethod(fn), "options": tuple(params), "params": dict(params),
        "reference": reference})
    cls(10)  # the checks, before anything trains (at K = 10; each run checks its own K)
    spec = LossSpec(name, cls, label or name, colour, colour, "user", dict(params),
                    lr_like, float(lr_scale), source_hash(fn))
    LOSSES[name] = spec
    return spec
