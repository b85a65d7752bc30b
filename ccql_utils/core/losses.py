"""Classification losses on raw network outputs: the paper's CE, QL and CCQL(w), and the losses
researchers compare them with.

Every loss maps (outputs [B, K] float, labels [B] int64) to the batch mean of a per-sample value
(docs/protocol.md, section 1); p = softmax(f):

| name              | per-sample value                                  | reference (outputs == 0) |
| ----------------- | ------------------------------------------------- | ------------------------ |
| `ce`              | -log p_y                                          | log K                    |
| `ql`              | 1/2 * sum_i (onehot(y)_i - f_i)^2                 | 1/2                      |
| `ccql`            | QL + (w/2) * (1 - f_y)^2, default w = sqrt(K-1)-1 | (w + 1)/2                |
| `rescaled_square` | (1/K) * [k (f_y - M)^2 + sum_{i != y} f_i^2]      | k M^2 / K                |
| `squentropy`      | -log p_y + 1/(K-1) * sum_{i != y} f_i^2           | log K                    |
| `label_smoothing` | CE against (1 - eps) onehot(y) + eps/K, eps = 0.1 | log K                    |
| `focal`           | -(1 - p_y)^gamma log p_y, gamma = 2               | (1 - 1/K)^gamma log K    |
| `brier`           | sum_i (p_i - onehot(y)_i)^2                       | (K - 1)/K                |

`reference_value` is used for normalized losses (loss / reference_value starts near 1). The
default weight (`default_ccql_weight`) and the references of CE, QL and CCQL (`zero_output_loss`)
are defined here once; the numpy theory (`theory/model.py`, `theory/figures.py`) uses them too.
CCQL(w) equals K/2 times the rescaled square loss with k = 1 + w, M = 1. `LOSSES` is the one
table keyed by a loss's name; `user_losses.register_loss` adds a user's loss to it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..reference import default_ccql_weight, zero_output_loss  # noqa: F401  (here for users of losses)


def _check_inputs(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if outputs.dim() != 2 or outputs.shape[1] != num_classes:
        raise ValueError(f"outputs must have shape [B, {num_classes}], got {list(outputs.shape)}")
    if labels.dim() != 1 or labels.shape[0] != outputs.shape[0]:
        raise ValueError(f"labels must have shape [B] with B = {outputs.shape[0]}, "
                         f"got {list(labels.shape)}")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")


def _check_label_range(labels: torch.Tensor, num_classes: int) -> None:
    """Range check; costs a host sync, so the trainer skips it (`validate=False`)."""
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got range "
                         f"{int(labels.min())}..{int(labels.max())}")


def at_least_float32(outputs: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs (bf16 autocast) as float32, for the loss; float32/64 unchanged."""
    return outputs.float() if outputs.dtype in (torch.float16, torch.bfloat16) else outputs


def _correct_output_and_rest(outputs: torch.Tensor, labels: torch.Tensor):
    """(f_y [B], sum_{i != y} f_i^2 [B]) in at least float32: the two terms of every square loss."""
    outputs = at_least_float32(outputs)
    f_y = outputs.gather(1, labels[:, None]).squeeze(1)
    return f_y, outputs.pow(2).sum(1) - f_y.pow(2)


class _ClassificationLoss(nn.Module):
    """Common checks; subclasses implement `per_sample(outputs, labels) -> [B]`."""

    name = ""
    options: tuple = ()  # its keyword options, attributes of the same names

    def __init__(self, num_classes: int, validate: bool = True):
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.validate = validate

    @property
    def reference_value(self) -> float:
        """The loss at all-zero outputs (any labels)."""
        raise NotImplementedError

    def per_sample(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """outputs: [B, K] float; labels: [B] int. Returns the batch mean, a scalar."""
        _check_inputs(outputs, labels, self.num_classes)
        if self.validate:
            _check_label_range(labels, self.num_classes)
        return self.batch_mean(outputs, labels.long())

    def batch_mean(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The checked batch's mean loss (a loss without per-sample values overrides this)."""
        return self.per_sample(outputs, labels).mean()

    def batch_means(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """N stacked models' batch means [N] from outputs [B, N, K] and labels [B, N] (stacked.py)."""
        return self.per_sample(outputs.flatten(0, 1), labels.flatten()).view(labels.shape).mean(0)

    def extra_repr(self) -> str:
        shown = [f"{n}={getattr(self, n):.4g}" for n in self.options]
        return ", ".join([f"num_classes={self.num_classes}", *shown])


class CrossEntropyLoss(_ClassificationLoss):
    name = "ce"

    @property
    def reference_value(self) -> float:
        return zero_output_loss("ce", self.num_classes)

    def per_sample(self, outputs, labels):
        return F.cross_entropy(outputs, labels, reduction="none")


class RescaledSquareLoss(_ClassificationLoss):
    """Hui & Belkin (ICLR 2021): (1/K) [k (f_y - M)^2 + sum_{i != y} f_i^2] per sample."""

    name = "rescaled_square"
    options = ("k", "M")

    def __init__(self, num_classes: int, k: float = 1.0, M: float = 1.0, validate: bool = True):
        super().__init__(num_classes, validate)
        if not (k > 0 and math.isfinite(k)):
            raise ValueError(f"rescaled_square needs k > 0, got {k}")
        if not (M > 0 and math.isfinite(M)):
            raise ValueError(f"rescaled_square needs M > 0, got {M}")
        self.k, self.M = float(k), float(M)

    @property
    def reference_value(self) -> float:
        return self.k * self.M ** 2 / self.num_classes

    def per_sample(self, outputs, labels):
        f_y, others = _correct_output_and_rest(outputs, labels)
        return (self.k * (f_y - self.M).pow(2) + others) / self.num_classes


class CorrectClassQuadraticLoss(_ClassificationLoss):
    """CCQL(w) = 1/2 [(1 + w)(f_y - 1)^2 + sum_{i != y} f_i^2]; w = 0 is QL."""

    name = "ccql"
    options = ("w",)

    def __init__(self, num_classes: int, w: float | None = None, validate: bool = True):
        super().__init__(num_classes, validate)
        if w is None:
            w = default_ccql_weight(self.num_classes)
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"ccql needs a finite weight w >= 0, got {w}")
        self.w = float(w)

    @property
    def reference_value(self) -> float:
        return zero_output_loss("ccql", self.num_classes, self.w)

    def per_sample(self, outputs, labels):
        f_y, others = _correct_output_and_rest(outputs, labels)
        return 0.5 * ((1.0 + self.w) * (f_y - 1.0).pow(2) + others)


class QuadraticLoss(CorrectClassQuadraticLoss):
    """QL = 1/2 ||onehot(y) - f||^2 on raw outputs (CCQL with w = 0)."""

    name = "ql"
    options = ()

    def __init__(self, num_classes: int, validate: bool = True):
        super().__init__(num_classes, w=0.0, validate=validate)


class Squentropy(_ClassificationLoss):
    """Hui, Belkin and Wright, "Cut your losses with squentropy" (ICML 2023): CE plus the average
    square of the wrong-class outputs, -log softmax(f)_y + 1/(K-1) sum_{i != y} f_i^2."""

    name = "squentropy"

    @property
    def reference_value(self) -> float:
        return math.log(self.num_classes)

    def per_sample(self, outputs, labels):
        _, others = _correct_output_and_rest(outputs, labels)
        return F.cross_entropy(at_least_float32(outputs), labels, reduction="none") + others / (self.num_classes - 1)


class LabelSmoothingLoss(_ClassificationLoss):
    """CE against the smoothed target (1 - eps) onehot(y) + eps / K (Szegedy et al., "Rethinking
    the Inception architecture", CVPR 2016; torch's `label_smoothing`)."""

    name = "label_smoothing"
    options = ("eps",)

    def __init__(self, num_classes: int, eps: float = 0.1, validate: bool = True):
        super().__init__(num_classes, validate)
        if not 0 <= eps < 1:
            raise ValueError(f"label_smoothing needs 0 <= eps < 1, got {eps}")
        self.eps = float(eps)

    @property
    def reference_value(self) -> float:
        return math.log(self.num_classes)

    def per_sample(self, outputs, labels):
        return F.cross_entropy(at_least_float32(outputs), labels, reduction="none", label_smoothing=self.eps)


class FocalLoss(_ClassificationLoss):
    """-(1 - p_y)^gamma log p_y, p = softmax(f) (Lin et al., "Focal loss for dense object
    detection", ICCV 2017); gamma = 0 is CE."""

    name = "focal"
    options = ("gamma",)

    def __init__(self, num_classes: int, gamma: float = 2.0, validate: bool = True):
        super().__init__(num_classes, validate)
        if not (gamma >= 0 and math.isfinite(gamma)):
            raise ValueError(f"focal needs a finite gamma >= 0, got {gamma}")
        self.gamma = float(gamma)

    @property
    def reference_value(self) -> float:
        return (1 - 1 / self.num_classes) ** self.gamma * math.log(self.num_classes)

    def per_sample(self, outputs, labels):
        log_p = F.log_softmax(at_least_float32(outputs), 1).gather(1, labels[:, None]).squeeze(1)
        return -(1 - log_p.exp()).pow(self.gamma) * log_p


class BrierLoss(_ClassificationLoss):
    """The Brier score (Brier, Monthly Weather Review 1950): sum_i (softmax(f)_i - onehot(y)_i)^2,
    the square loss on the probabilities, where QL squares the raw outputs."""

    name = "brier"

    @property
    def reference_value(self) -> float:
        return (self.num_classes - 1) / self.num_classes

    def per_sample(self, outputs, labels):
        p = F.softmax(at_least_float32(outputs), 1)
        return p.pow(2).sum(1) - 2 * p.gather(1, labels[:, None]).squeeze(1) + 1


@dataclass(frozen=True)
class LossSpec:
    """Everything keyed by a loss's name: its class and options (with `defaults` recorded in a
    run's identity), how figures show it (label, colour, a lighter shade for a second subset, the
    family it belongs to), which LR grid its probes start from (`lr_like`'s, times `lr_scale`),
    and for a user's loss (`register_loss`) the hash of its source, `code`."""

    name: str
    cls: type
    label: str = ""
    colour: str = "tab:grey"
    light: str = "lightgrey"
    family: str = ""
    defaults: dict = field(default_factory=dict)
    lr_like: str = "ce"
    lr_scale: float = 1.0
    code: str | None = None

    @property
    def options(self) -> tuple:
        return self.cls.options


LOSSES: dict[str, LossSpec] = {}

# Brier's gradient on the outputs is about 2/K of CE's at the start (softmax(f) near 1/K, each
# term scaled by p_i (1 - p_i)), so its probe starts from CE's grid times 10.
for _spec in (LossSpec("ce", CrossEntropyLoss, "CE", "tab:blue", "lightskyblue", "CE"),
              LossSpec("ql", QuadraticLoss, "QL", "tab:red", "lightsalmon", "CCQL", lr_like="ql"),
              LossSpec("ccql", CorrectClassQuadraticLoss, "CCQL", "tab:green", "yellowgreen", "CCQL",
                       lr_like="ccql"),
              LossSpec("rescaled_square", RescaledSquareLoss, "Rescaled square", "tab:purple",
                       "plum", "rescaled square", lr_like="ccql"),
              LossSpec("squentropy", Squentropy, "Squentropy", "tab:cyan", "paleturquoise", "CE"),
              LossSpec("label_smoothing", LabelSmoothingLoss, "Label smoothing", "tab:olive",
                       "khaki", "CE", {"eps": 0.1}),
              LossSpec("focal", FocalLoss, "Focal", "tab:orange", "navajowhite", "CE", {"gamma": 2.0}),
              LossSpec("brier", BrierLoss, "Brier", "tab:brown", "tan", "Brier", lr_scale=10.0)):
    LOSSES[_spec.name] = _spec
BUILT_IN = tuple(LOSSES)


def loss_names() -> tuple[str, ...]:
    return tuple(LOSSES)


def loss_spec(name: str) -> LossSpec:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)} (or add yours: user_losses.register_loss)")
    return LOSSES[name]


def colour_of(label: str) -> str | None:
    """The colour of a legend label: a loss's label, or '<label>, <subset>' (the second subset,
    e.g. the mammals, in the lighter shade)."""
    head, _, subset = label.partition(", ")
    spec = next((s for s in LOSSES.values() if s.label == head), None)
    return None if spec is None else spec.light if subset == "mammals" else spec.colour


def make_loss(name: str, num_classes: int, validate: bool = True, **options) -> _ClassificationLoss:
    """Build a loss by name (the LOSSES table: the built-in ones and any `user_losses.register_loss` added).

    validate=True checks that labels lie in 0..K-1 on every call (a host sync); the trainer
    turns it off. Options set to None take their defaults.
    """
    spec = loss_spec(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"loss {name!r} takes options {list(spec.options) or 'none'}, got {unknown}")
    options = {k: v for k, v in options.items() if v is not None}
    return spec.cls(num_classes, validate=validate, **options)
