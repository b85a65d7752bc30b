"""Beyond the paper (notebook 06): the losses researchers compare with, on the paper's protocol.

CE, QL and CCQL beside squentropy (Hui, Belkin and Wright 2023), label smoothing, the focal loss,
the Brier score, Hui & Belkin's rescaled square loss and any user-registered loss, at each K of the
preset's `LOSS_ZOO` entry, each at its own probed LR on the K sweep's sizes and classes. Each run
also records the expected calibration error (ECE, Guo et al., ICML 2017) of the softmax of its test
outputs, so its runs are not the K sweep's. QL, CCQL and the rescaled square loss are not trained
as probabilities: their ECE says how far the softmax of raw regression outputs is from calibrated.
"""
from __future__ import annotations

import dataclasses

from .k_sweep import SweepFigure, sweep_configs
from .loss_weights import Variant, lr_grid, scaled_grid
from ..core.losses import BUILT_IN, LOSSES, loss_spec
from .presets import K_SWEEP, LOSS_ZOO

CALIBRATION_BINS = 15
RS_OPTIONS = {"k": 1.0, "M": 15.0}  # Hui & Belkin's many-class setting, as in the weight sweep


def zoo_losses(preset: str, losses=None) -> tuple[str, ...]:
    """The losses the zoo compares: `losses` (names), or the preset's and every user-registered one."""
    if losses is None:
        return (*LOSS_ZOO[preset].losses, *(n for n in LOSSES if n not in BUILT_IN))
    if isinstance(losses, str) or not losses or not all(isinstance(n, str) for n in losses):
        raise ValueError(f"losses must be a list of loss names such as ['ce', 'focal'], got {losses!r}")
    for name in losses:
        loss_spec(name)
    return tuple(dict.fromkeys(losses))


def options_of(name: str) -> dict:
    return dict(RS_OPTIONS) if name == "rescaled_square" else {}


class LossZooFigure(SweepFigure):
    """Every loss of the zoo at each K of the preset's LOSS_ZOO entry, at its own probed LR."""

    sizes_of = LOSS_ZOO

    def configs(self, preset, seeds, ctx, k_values=None, losses=None):
        """(loss, K) -> the full run's config at its grid's first LR, recording the test ECE."""
        k_values, names = self.k_values(preset, k_values), zoo_losses(preset, losses)
        base = sweep_configs(preset, seeds[0], ctx.device, k_values, ("ce",))
        return {(name, k): dataclasses.replace(
                    base["ce", k], loss=name, loss_options=options_of(name), loss_code=None,
                    lr=self.grid(preset, (name, k))[0], calibration_bins=CALIBRATION_BINS).resolved()
                for name in names for k in k_values}

    def grid(self, preset, point):
        """The K sweep's grid of the loss's `lr_like` loss times its `lr_scale` (losses.LOSSES);
        the rescaled square loss's by the weight sweep's rule (loss_weights.lr_grid)."""
        name, k = point
        if name == "rescaled_square":
            return lr_grid(preset, Variant("RS", name, RS_OPTIONS, k=RS_OPTIONS["k"], M=RS_OPTIONS["M"]), k)
        spec = LOSSES[name]
        return scaled_grid(K_SWEEP[preset].lr_grid[spec.lr_like], spec.lr_scale)

    def probe_label(self, point):
        return LOSSES[point[0]].label

    def row(self, result, name, k):
        return {"loss": LOSSES[name].label, "family": LOSSES[name].family}

    def data(self, result):
        frame = super().data(result)
        frame["test_ece"] = [run.final().get("test_ece") if run.finished else None
                             for run in result.runs.values()]
        return frame

    def describe(self, result):
        names = list(dict.fromkeys(key[0] for key in result.configs))
        return {"experiment": "loss_zoo", "losses": names,
                "options": {name: options_of(name) or LOSSES[name].defaults for name in names},
                "user_losses": {name: LOSSES[name].code for name in names if LOSSES[name].code},
                "calibration": f"ECE of the softmax of the test outputs, {CALIBRATION_BINS} equal-width bins",
                **super().describe(result)}

    def plot(self, result):
        """Four bar panels, a bar per loss and a colour per K (seeds: mean, +-1 sd): test accuracy,
        training accuracy, normalized training loss, and the test ECE."""
        import matplotlib.pyplot as plt
        import seaborn as sns
        t = self.finished_data(result)
        fig, axes = plt.subplots(1, 4, figsize=(20, 4.4))
        panels = [("test_acc", "test accuracy"), ("train_acc", "training accuracy"),
                  ("train_loss_norm", "normalized training loss"), ("test_ece", "test ECE (softmax, 15 bins)")]
        order = list(dict.fromkeys(t.loss))
        for ax, (column, name), letter in zip(axes, panels, "abcd"):
            if len(t):
                sns.barplot(data=t, x="loss", y=column, hue="K", order=order, palette="viridis",
                            errorbar="sd", ax=ax)
            ax.set(xlabel="", ylabel=name, title=f"({letter}) final {name}")
            ax.tick_params(axis="x", labelrotation=35, labelsize=8)
            ax.grid(alpha=0.3, axis="y")
        return self.finish(fig, result,
                           "Beyond the paper: the losses researchers compare with, each at its own probed LR")


LOSS_ZOO_FIGURE = LossZooFigure(
    "loss_zoo", "fig6_loss_zoo", "06_loss_zoo.ipynb", "loss zoo", {
        "k_values": (None, "a subset of the preset's K values, e.g. [25] (default: all)"),
        "losses": (None, "loss names, e.g. ['ce', 'focal', 'my_loss'] (default: the zoo's and every registered one)")})
