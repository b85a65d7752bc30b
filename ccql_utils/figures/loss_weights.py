"""Beyond the paper (notebook 05): the CCQL weight w, and Hui & Belkin's rescaled square loss.

The paper weights the correct class (CCQL, default w = sqrt(K-1) - 1); Hui & Belkin (ICLR 2021)
rescale: (1/K) [k (f_y - M)^2 + sum_{i != y} f_i^2], k = 1, M = 15 for many classes. CCQL(w) is
K/2 times the rescaled loss with k = 1 + w, M = 1, so that setting differs from CCQL only in the
gradient's scale, which a swept LR absorbs (up to the weight decay's relative size). At each K of
the preset's `LOSS_WEIGHTS` entry: CE, CCQL at every w (w = 0 is QL) and the rescaled square loss
at every (k, M), each at its own probed LR (`lr_grid`), on the K sweep's sizes and classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .k_sweep import SweepFigure, sweep_configs
from ..core.losses import LOSSES, default_ccql_weight
from .presets import K_SWEEP, K_WEIGHTS, LOSS_WEIGHTS


@dataclass(frozen=True)
class Variant:
    """One loss of the sweep: `name` is the same at every K (the key); w, k, M are its numbers at
    this K (None where they do not apply)."""

    name: str
    loss: str
    options: dict
    w: float | None = None
    k: float | None = None
    M: float | None = None

    @property
    def family(self) -> str:
        return LOSSES[self.loss].family


def variants(preset: str, num_classes: int) -> list[Variant]:
    """CE, CCQL at each of the preset's weights (w = 0 is the loss "ql"; the default weight is
    plain "ccql", so both are the K sweep's runs) and the rescaled square loss at each (k, M)."""
    spec, w_star = LOSS_WEIGHTS[preset], default_ccql_weight(num_classes)
    out = [Variant("CE", "ce", {})]
    for w in spec.weights:
        if w == 0:
            out.append(Variant("QL (w = 0)", "ql", {}, w=0.0))
        elif w is None:
            out.append(Variant("CCQL w = sqrt(K-1)-1", "ccql", {}, w=w_star))
        else:  # a K_WEIGHTS name, or a number
            name, value = (w, K_WEIGHTS[w](num_classes)) if isinstance(w, str) else (f"{w:g}", w)
            out.append(Variant(f"CCQL w = {name}", "ccql", {"w": float(value)}, w=float(value)))
    for k, M in spec.rescaled:
        name = f"RS k = {'1+w*' if k is None else f'{k:g}'}, M = {M:g}"
        k = 1 + w_star if k is None else float(k)
        out.append(Variant(name, "rescaled_square", {"k": k, "M": float(M)}, k=k, M=float(M)))
    return out


def scaled_grid(lrs, scale: float) -> tuple:
    """Each LR times `scale`, to 3 significant digits (the probed values read as typed)."""
    return tuple(float(f"{lr * scale:.3g}") for lr in lrs)


def lr_grid(preset: str, variant: Variant, num_classes: int) -> tuple:
    """The LRs the probe tries for `variant` at K = num_classes. CE, QL and default-w CCQL: the K
    sweep's grids (they are its runs). Others: the K sweep's CCQL grid times the curvature of their
    correct-class term relative to default-w (w*) CCQL's: (1 + w*) / (1 + w) for CCQL(w), and
    (1 + w*) / k * K / 2 for the rescaled square loss (its 1/K and missing 1/2), one step lower too
    (M > 1 multiplies its first gradients by M). The weight decay (5e-4 per unit LR) then acts more
    strongly on the rescaled loss than on the CCQL it equals: part of what "in practice" means."""
    grids, w_star = K_SWEEP[preset].lr_grid, default_ccql_weight(num_classes)
    if variant.loss in ("ce", "ql") or (variant.loss == "ccql" and not variant.options):
        return tuple(grids[variant.loss])
    base = tuple(grids["ccql"])
    if variant.loss == "ccql":
        scale = (1 + w_star) / (1 + variant.w)
    else:  # one step lower too: M > 1 multiplies the first steps' gradient by M
        step = base[1] / base[0] if len(base) > 1 else 10 ** 0.5
        scale, base = (1 + w_star) / variant.k * num_classes / 2, (base[0] / step, *base)
    return scaled_grid(base, scale)


class WeightSweepFigure(SweepFigure):
    """CE, CCQL at each weight and the rescaled square loss at each (k, M), at every K of the
    preset's LOSS_WEIGHTS entry, each at its own probed LR, on the K sweep's sizes and classes."""

    sizes_of = LOSS_WEIGHTS
    point_column = "variant"

    def configs(self, preset, seeds, ctx, k_values=None):
        """(variant name, K) -> the full run's config at its grid's first LR."""
        k_values = self.k_values(preset, k_values)
        base = sweep_configs(preset, seeds[0], ctx.device, k_values, ("ce", "ql", "ccql"))
        return {(v.name, k): dataclasses.replace(
                    base["ql" if v.loss == "rescaled_square" else v.loss, k], loss=v.loss,
                    loss_options=dict(v.options), lr=lr_grid(preset, v, k)[0]).resolved()
                for k in k_values for v in variants(preset, k)}

    def variant(self, preset: str, name: str, k: int) -> Variant:
        return next(v for v in variants(preset, k) if v.name == name)

    def grid(self, preset, point):
        return lr_grid(preset, self.variant(preset, *point), point[1])

    def point_name(self, point):
        return f"{point[0]} K={point[1]}"

    def row(self, result, name, k):
        v = self.variant(result.preset, name, k)
        return {"variant": name, "family": v.family, "w": v.w, "k": v.k, "M": v.M}

    def describe(self, result):
        return {"experiment": "loss_weights", "loss_weights": dataclasses.asdict(LOSS_WEIGHTS[result.preset]),
                **super().describe(result)}

    def plot(self, result):
        """(a) test accuracy and (b) normalized training loss of CCQL against w (x axis 1 + w, log;
        CE dashed), one colour per K; (c) test accuracy of CE, QL, default-w CCQL and the rescaled
        square variants, grouped by K. Seeds: mean, +-1 sd."""
        import matplotlib.pyplot as plt
        import seaborn as sns
        t = self.finished_data(result)
        ks = sorted(t.K.unique())
        colours = dict(zip(ks, sns.color_palette("viridis", len(ks))))
        ccql = t[t.family == "CCQL"].assign(one_plus_w=lambda d: 1 + d.w)
        fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.5]})
        for ax, (column, name), letter in zip(axes, [("test_acc", "test accuracy"),
                                                     ("train_loss_norm", "normalized training loss")], "ab"):
            for k in ks:
                d = ccql[ccql.K == k]
                sns.lineplot(data=d, x="one_plus_w", y=column, color=colours[k], marker="o",
                             errorbar="sd", ax=ax, label=f"CCQL, K = {k}")
                default = d[d.variant.str.contains("sqrt")]  # one star per K: the seeds' mean, as the line
                ax.plot(default.one_plus_w.mean(), default[column].mean(), "*", color=colours[k], ms=12)
                ce = t[(t.variant == "CE") & (t.K == k)][column]
                if column == "test_acc" and len(ce):
                    ax.axhline(ce.mean(), color=colours[k], ls="--", lw=1, label=f"CE, K = {k}")
            ax.set_xscale("log")
            ax.set(xlabel="1 + w (w = 0: QL; star: the default sqrt(K-1) - 1)", ylabel=name,
                   title=f"({letter}) CCQL: final {name} against w")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        bars = t[~t.variant.str.startswith("CCQL w = ") | t.variant.str.contains("sqrt")]
        sns.barplot(data=bars, x="variant", y="test_acc", hue="K", palette=colours, errorbar="sd",
                    ax=axes[2], order=list(dict.fromkeys(bars.variant)))
        axes[2].set(xlabel="", ylabel="test accuracy", title="(c) CE, CCQL and the rescaled square loss (RS)")
        axes[2].tick_params(axis="x", labelrotation=25, labelsize=7)
        for ax in axes[::2]:
            ax.set_ylim(0, None)
        return self.finish(fig, result, "Beyond the paper: the CCQL weight and Hui & Belkin's rescaling")


WEIGHT_SWEEP_FIGURE = WeightSweepFigure(
    "loss_weights", "fig5_loss_weights", "05_loss_weights.ipynb", "loss-weight sweep",
    {"k_values": (None, "a subset of the preset's K values, e.g. [25] (default: all)")})
