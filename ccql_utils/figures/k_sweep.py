"""Beyond the paper (notebook 04): final accuracy and loss against the number of classes K.

Every loss trains at every K of the preset's `K_SWEEP` entry on random classes, the same images
per class at every K. The stable LR of the summed square losses falls as K grows, so each
(loss, K) first gets a short probe over the preset's LR grid, then trains at the chosen LR once
per seed. Class draws are nested (`data.random_classes`): a larger K adds classes to a smaller
K's problem instead of drawing a new one.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from ..core.config import TrainConfig
from .figure import Figure
from ..core.losses import LOSSES, default_ccql_weight
from .presets import K_SWEEP, get_preset
from ..execution.sweep import final_numbers, probe


def trained_as(loss: str, k: int) -> str:
    """The loss that (loss, K) trains: CCQL whose default weight sqrt(K - 1) - 1 is 0 (K = 2) is
    QL by construction, so it is QL's run (one run, one LR probe), not a second one."""
    return "ql" if loss == "ccql" and default_ccql_weight(k) == 0 else loss


def _is_int(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


class SweepFigure(Figure):
    """A figure whose points (a loss and a K) each get their LR from a short probe over a grid
    (`sweep.mark_best` picks), then train at it once per seed. Sizes: presets.K_SWEEP[preset].
    A sweep defines `grid(preset, point)`, the LRs to probe, and `row(result, name, k)`, the
    columns that say what a point is in its data."""

    sizes_of = K_SWEEP  # which presets the figure has, and their K values
    point_column = "loss"

    def point_name(self, point: tuple) -> str:
        return f"{LOSSES[point[0]].label} K={point[1]}"

    def k_values(self, preset: str, k_values) -> tuple:
        if preset not in self.sizes_of:
            raise ValueError(f"the {self.title} has no preset {preset!r}; choose one of {', '.join(self.sizes_of)}")
        if k_values is None:
            return self.sizes_of[preset].k_values
        if not (isinstance(k_values, (list, tuple)) and k_values and all(_is_int(k, 2) for k in k_values)):
            raise ValueError(f"k_values must be a list of class counts such as [5, 25], got {k_values!r}")
        unknown = sorted(set(k_values) - set(self.sizes_of[preset].k_values))
        if unknown:
            raise ValueError(f"K {unknown} not in the {preset} {self.title} {self.sizes_of[preset].k_values}")
        return tuple(k_values)

    def settle(self, preset, seeds, ctx, own, configs, train=None):
        """Probe every point's LRs (`sweep.probe`); the full runs at the chosen LR, once per seed.
        Probes that would take hours on a CPU that device 'auto' chose are refused (ValueError)
        unless train=False, which reads the stored probes only (a point without one is left out)."""
        grids = {point: self.grid(preset, point) for point in configs}
        table, full = probe(ctx, configs, grids, K_SWEEP[preset].probe_epochs, seeds, self.point_name,
                            train=train is not False)
        return full, {"lr_table": self.probe_table(table)}

    def probe_table(self, table: pd.DataFrame) -> pd.DataFrame:
        """The probe's table (one row per point and LR) as saved: K first and the point's label
        (`probe_label`) in `point_column`, in place of `point` (the key)."""
        out = table.drop(columns="point")
        out.insert(0, "K", table.point.map(lambda key: key[1]))
        if self.point_column in out:
            out[self.point_column] = table.point.map(self.probe_label)
        else:
            out.insert(0, self.point_column, table.point.map(self.probe_label))
        return out

    def probe_label(self, point: tuple) -> str:
        return point[0]  # the K sweep's: the loss, even where it trains as another (trained_as)

    def sizes(self, result) -> str:
        p, sweep = get_preset(result.preset), K_SWEEP[result.preset]
        return (f"WRN-{p.depth}-{p.width}, {sweep.train_per_class or 500} train images/class at every K, "
                f"{sweep.epochs} epochs, LR per (loss, K) from a {sweep.probe_epochs}-epoch probe")

    def describe(self, result) -> dict:
        p = get_preset(result.preset)
        return {"sizes": dataclasses.asdict(K_SWEEP[result.preset]), "model": f"WRN-{p.depth}-{p.width}",
                "lr_rule": "per point: the smallest probed LR within 0.5 points of the best final test "
                           "accuracy of the probe (sweep.mark_best)",
                "chosen_lrs": {result.name(key): c.lr for key, c in result.configs.items()
                               if key[-1] == result.seeds[0]}}

    def extra_files(self, result) -> dict:
        return {"lr_probe": result.extra["lr_table"].drop(columns="run_dir")}

    def data(self, result) -> pd.DataFrame:
        """One row per run: its point, K, seed, lr, state, final accuracies and normalized losses."""
        return pd.DataFrame([{**self.row(result, name, k), "K": k, "seed": seed, "lr": result.configs[name, k, seed].lr,
                              "state": run.describe(), **final_numbers(run)}
                             for (name, k, seed), run in result.runs.items()])

    def table(self, result) -> pd.DataFrame:
        """Per point and K: mean and sd over the seeds' finished runs (n), the chosen LR, and the
        gap to CE in test accuracy (points, mean of per-seed gaps)."""
        t, by = self.data(result), self.point_column
        extra = {"w": ("w", "first")} if "w" in t else {}
        ece = {"test_ece": ("test_ece", "mean")} if "test_ece" in t else {}  # the loss zoo's calibration
        out = t.groupby([by, "K"], sort=False).agg(
            **extra, lr=("lr", "first"), n=("test_acc", "count"), test_acc=("test_acc", "mean"),
            test_acc_sd=("test_acc", "std"), train_acc=("train_acc", "mean"),
            train_loss_norm=("train_loss_norm", "mean"), **ece).reset_index()
        ce = t[t[by] == "CE"].set_index(["K", "seed"]).test_acc
        gaps = t.assign(gap=100 * (t.set_index(["K", "seed"]).index.map(ce) - t.test_acc))
        out["gap_to_ce_points"] = gaps.groupby([by, "K"], sort=False).gap.mean().values
        return out

    def finished_data(self, result) -> pd.DataFrame:
        """The data of the finished runs, the ones the plots draw."""
        t = self.data(result)
        return t[t.state == "finished"]


class KSweepFigure(SweepFigure):
    """Beyond the paper (notebook 04): final accuracy and loss of CE, QL and CCQL against K."""

    def configs(self, preset, seeds, ctx, k_values=None, theory_d=64, theory_sigma=0.3):
        """(loss, K) -> the full run's config, its LR still the grid's first (the probe chooses it).
        At K = 2 CCQL's entry is QL's config (`trained_as`). Classes: the first seed's draw."""
        if not _is_int(theory_d, 2):
            raise ValueError(f"theory_d must be an integer >= 2, got {theory_d!r}")
        if isinstance(theory_sigma, bool) or not isinstance(theory_sigma, (int, float)) or not 0 <= theory_sigma < float("inf"):
            raise ValueError(f"theory_sigma must be a number >= 0, got {theory_sigma!r}")
        k_values = self.k_values(preset, k_values)
        return sweep_configs(preset, seeds[0], ctx.device, k_values, ("ce", "ql", "ccql"))

    def grid(self, preset, point):
        return K_SWEEP[preset].lr_grid[trained_as(*point)]

    def settle(self, preset, seeds, ctx, own, configs, train=None):
        full, extra = super().settle(preset, seeds, ctx, own, configs, train)
        ks = sorted({k for _, k in configs})
        return full, {**extra, "theory": theory_min_losses(ks, own["theory_d"], own["theory_sigma"])}

    def row(self, result, name, k) -> dict:
        return {"loss": LOSSES[name].label}

    def describe(self, result):
        theory = result.extra.get("theory")
        return {"experiment": "k_sweep", **super().describe(result), "theory": None if theory is None else {
            "what": "minimum normalized population QL / CCQL of the linear mixture model (theory/model.py), "
                    "a qualitative comparison", **theory.attrs}}

    def plot(self, result):
        """Four panels against K (log axis): test accuracy, training accuracy, normalized training
        loss (with the linear model's minima, dotted, if set) and the gap to CE in test accuracy."""
        import matplotlib.pyplot as plt
        import seaborn as sns
        COLOURS = {spec.label: spec.colour for spec in LOSSES.values()}
        t, gaps = self.finished_data(result), self.table(result)
        fig, axes = plt.subplots(1, 4, figsize=(19, 3.9))
        panels = [("test_acc", "test accuracy"), ("train_acc", "training accuracy"),
                  ("train_loss_norm", "normalized training loss")]
        for ax, (column, name), letter in zip(axes, panels, "abc"):
            sns.lineplot(data=t, x="K", y=column, hue="loss", palette=COLOURS, marker="o",
                         errorbar="sd", ax=ax)
            ax.set(ylabel=name, title=f"({letter}) final {name}")
        chance = np.array(sorted(t.K.unique()))
        for ax in axes[:2]:
            ax.plot(chance, 1 / chance, color="grey", lw=0.6, ls=":", label="chance (1/K)")
            ax.set_ylim(0, 1.02)
        if result.extra.get("theory") is not None:
            for loss, th in result.extra.get("theory").groupby("loss"):
                axes[2].plot(th.K, th.min_loss_norm, color=COLOURS[loss], ls=":", marker=".",
                             label=f"{loss}: linear-model minimum (qualitative)")
        sns.lineplot(data=gaps[gaps.loss != "CE"], x="K", y="gap_to_ce_points", hue="loss",
                     palette=COLOURS, marker="o", ax=axes[3])
        axes[3].axhline(0, color="grey", lw=0.6)
        axes[3].set(ylabel="CE minus loss, test accuracy (points)", title="(d) gap to CE")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xticks(chance, [str(k) for k in chance])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        return self.finish(fig, result, "Beyond the paper: the losses against the number of classes K")


def sweep_configs(preset: str, class_seed: int, device: str, k_values, losses) -> dict[tuple, TrainConfig]:
    """(loss, K) -> a run at `preset`'s K sweep sizes on random classes, at the loss's first LR."""
    p, sweep = get_preset(preset), K_SWEEP[preset]
    return {(loss, k): TrainConfig(
                loss=trained_as(loss, k), classes="random", num_classes=k, class_seed=class_seed,
                seed=class_seed, depth=p.depth, width=p.width, batch_size=p.batch_size, epochs=sweep.epochs,
                train_per_class=sweep.train_per_class, test_per_class=sweep.test_per_class,
                lr=sweep.lr_grid[trained_as(loss, k)][0], checkpoint_every=p.checkpoint_every,
                device=device).resolved()
            for loss in losses for k in k_values}


def theory_min_losses(k_values, d: int, sigma: float, seed: int = 0) -> pd.DataFrame:
    """The linear model's minimum normalized population QL and CCQL (w = sqrt(K-1) - 1) against K
    (theory/model.py; random unit centers in d dimensions, nested in K, Gaussian noise sigma). A
    qualitative stand-in: the network is not that model; d stands for its feature dimension."""
    from ..theory.model import ccql_normalized_min, ql_normalized_min, sample_centers
    M = sample_centers(max(k_values), d, 0.0, "random", seed=seed)
    rows = []
    for k in k_values:
        rows.append({"K": k, "loss": "QL", "min_loss_norm": ql_normalized_min(M[:k], sigma)})
        rows.append({"K": k, "loss": "CCQL",
                     "min_loss_norm": ccql_normalized_min(M[:k], sigma, default_ccql_weight(k))})
    frame = pd.DataFrame(rows)
    frame.attrs = {"d": d, "sigma": sigma, "centers": "random unit, rho 0", "seed": seed}
    return frame


K_SWEEP_FIGURE = KSweepFigure(
    "k_sweep", "fig4_k_sweep", "04_k_sweep.ipynb", "K sweep", {
        "k_values": (None, "a subset of the preset's K values, e.g. [5, 25] (default: all)"),
        "theory_d": (64, "the linear model's dimension: WRN-10-1's 64 features (qualitative)"),
        "theory_sigma": (0.3, "the linear model's noise level")})
