"""Beyond the paper (notebook 05): the CCQL weight w, and Hui & Belkin's rescaled square loss.

The paper's fix for the quadratic loss is a weight w on the correct class (CCQL, default
w = sqrt(K-1) - 1). Hui & Belkin (ICLR 2021) fix the same loss by rescaling: (1/K) [k (f_y - M)^2
+ sum_{i != y} f_i^2], with k = 1, M = 15 for many classes. Algebraically CCQL(w) is K/2 times the
rescaled square loss with k = 1 + w, M = 1, so that setting differs from CCQL only in the
gradient's scale, which a swept LR absorbs (up to the weight decay's relative size). This
notebook trains, at each K of the preset's `LOSS_WEIGHTS` entry (presets.py), CE, CCQL at every w
(w = 0 is QL) and the rescaled square loss at every (k, M), each at its own LR from a short probe
(sweep.probe_then_train), on the K sweep's sizes and classes.

LR grids (one place: `lr_grid`): CE, QL and default-w CCQL probe the K sweep's grids (they are
the K sweep's own runs). Every other variant probes the K sweep's CCQL grid rescaled by the
curvature of its correct-class term relative to default-w CCQL's: x (1 + w*) / (1 + w) for
CCQL(w), and x (1 + w*) / k * K / 2 for the rescaled square loss (its 1/K and missing 1/2), with
one more step down for the latter (M > 1 multiplies its first gradients by M); w* is the default
weight. At the scaled LRs the weight decay (a fixed 5e-4 per unit LR) acts more strongly on the
rescaled loss than on the CCQL it equals; this is part of what "in practice" means here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import TrainConfig
from .k_sweep import k_sweep_configs
from .losses import default_ccql_weight
from .presets import K_SWEEP, K_WEIGHTS, LOSS_WEIGHTS, get_preset, resolve_preset, seed_list
from .provenance import PROJECT_ROOT
from .context import RunContext
from .runs import Run
from .sweep import final_numbers, probe_then_train, save_sweep_figure, sweep_notebook_values

FIGURE = "fig5_loss_weights"
NOTEBOOK = "05_loss_weights.ipynb"
# The notebook's parameters and what None (their value in the notebook) means.
NOTEBOOK_DEFAULTS = {
    "preset": "auto",        # paper on a CUDA machine, quick elsewhere (sizes: presets.LOSS_WEIGHTS)
    "seed": 0,               # model initialisation, data order and the random class draw
    "seeds": None,           # several seeds, e.g. [0, 1, 2]: mean and +-1 sd error bars
    "k_values": None,        # a subset of the preset's K values (default: all)
    "data_root": None, "verify_data": True, "device": "auto",
    "runs_dir": str(PROJECT_ROOT / "runs"), "figures_dir": str(PROJECT_ROOT / "figures"),
    "progress": True, "executor": "local", "address": None, "runs_per_gpu": None,
}


@dataclass(frozen=True)
class Variant:
    """One loss of the sweep: `name` is the same at every K (the key); w, k, M are its numbers at
    this K (w for CE and the rescaled square loss: None)."""

    name: str
    loss: str
    options: dict
    w: float | None = None
    k: float | None = None
    M: float | None = None

    @property
    def family(self) -> str:
        return {"ce": "CE", "ql": "CCQL", "ccql": "CCQL", "rescaled_square": "rescaled square"}[self.loss]


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
        elif isinstance(w, str):
            value = float(K_WEIGHTS[w](num_classes))
            out.append(Variant(f"CCQL w = {w}", "ccql", {"w": value}, w=value))
        else:
            out.append(Variant(f"CCQL w = {w:g}", "ccql", {"w": float(w)}, w=float(w)))
    for k, M in spec.rescaled:
        name = f"RS k = {'1+w*' if k is None else f'{k:g}'}, M = {M:g}"
        k = 1 + w_star if k is None else float(k)
        out.append(Variant(name, "rescaled_square", {"k": k, "M": float(M)}, k=k, M=float(M)))
    return out


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def lr_grid(preset: str, variant: Variant, num_classes: int) -> tuple:
    """The LRs the probe tries for `variant` at K = num_classes (the rule: the module docstring)."""
    grids, w_star = K_SWEEP[preset].lr_grid, default_ccql_weight(num_classes)
    if variant.loss in ("ce", "ql") or (variant.loss == "ccql" and not variant.options):
        return tuple(grids[variant.loss])
    base = tuple(grids["ccql"])
    if variant.loss == "ccql":
        scale = (1 + w_star) / (1 + variant.w)
    else:  # one step lower too: M > 1 multiplies the first steps' gradient by M
        step = base[1] / base[0] if len(base) > 1 else 10 ** 0.5
        scale, base = (1 + w_star) / variant.k * num_classes / 2, (base[0] / step, *base)
    return tuple(_round(lr * scale) for lr in base)


def weight_sweep_configs(preset: str, seed: int = 0, class_seed: int = 0, device: str = "auto",
                         k_values=None) -> tuple[dict, dict]:
    """((variant name, K) -> the full run's config at its grid's first LR, (variant name, K) ->
    Variant). The sizes and classes are the K sweep's at `preset`."""
    spec = LOSS_WEIGHTS[preset]
    k_values = spec.k_values if k_values is None else tuple(k_values)
    unknown = sorted(set(k_values) - set(spec.k_values))
    if unknown:
        raise ValueError(f"K {unknown} not in the {preset} loss-weight sweep {spec.k_values}")
    base = k_sweep_configs(preset, seed, class_seed, device, k_values)
    configs, info = {}, {}
    for k in k_values:
        for v in variants(preset, k):
            template = base["ql" if v.loss == "rescaled_square" else v.loss, k]
            configs[v.name, k] = dataclasses.replace(
                template, loss=v.loss, loss_options=dict(v.options),
                lr=lr_grid(preset, v, k)[0]).resolved()
            info[v.name, k] = v
    return configs, info


@dataclass
class WeightSweepResult:
    preset: str
    lr_table: pd.DataFrame                       # the probe, one row per (variant, K, LR)
    variants: dict[tuple[str, int], Variant]
    configs: dict[tuple[str, int, int], TrainConfig]   # (variant, K, seed) -> the full run
    runs: dict[tuple[str, int, int], Run]
    figures_dir: str | None = None

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(s for _, _, s in self.runs))

    def final_table(self) -> pd.DataFrame:
        """One row per run: variant, its family, w / k / M, K, seed, lr, state, final accuracies
        and normalized losses (each loss divided by its own value at zero outputs)."""
        rows = []
        for (name, k, seed), run in self.runs.items():
            v = self.variants[name, k]
            rows.append({"variant": name, "family": v.family, "w": v.w, "k": v.k, "M": v.M, "K": k,
                         "seed": seed, "lr": self.configs[name, k, seed].lr, "state": run.describe(),
                         **final_numbers(run)})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Per (variant, K): the chosen LR, n finished seeds, mean and sd test accuracy, mean
        training accuracy and normalized training loss, and the gap to CE (test accuracy
        points, mean of per-seed gaps)."""
        t = self.final_table()
        out = t.groupby(["variant", "K"], sort=False).agg(
            w=("w", "first"), lr=("lr", "first"), n=("test_acc", "count"),
            test_acc=("test_acc", "mean"), test_acc_sd=("test_acc", "std"),
            train_acc=("train_acc", "mean"), train_loss_norm=("train_loss_norm", "mean")).reset_index()
        ce = t[t.variant == "CE"].set_index(["K", "seed"]).test_acc
        gap = 100 * (t.set_index(["K", "seed"]).index.map(ce) - t.test_acc)
        out["gap_to_ce_points"] = t.assign(gap=gap).groupby(["variant", "K"], sort=False).gap.mean().values
        return out

    def provenance(self) -> dict[str, Any]:
        p, sweep = get_preset(self.preset), K_SWEEP[self.preset]
        return {"experiment": "loss_weights", "preset": self.preset, "seeds": self.seeds,
                "loss_weights": dataclasses.asdict(LOSS_WEIGHTS[self.preset]),
                "sizes": dataclasses.asdict(sweep), "model": f"WRN-{p.depth}-{p.width}",
                "lr_rule": "per (variant, K): the smallest probed LR within 0.5 points of the best "
                           "final test accuracy of the probe (sweep.mark_best); grids: "
                           "loss_weights.lr_grid",
                "chosen_lrs": {f"{n} K={k}": c.lr for (n, k, s), c in self.configs.items()
                               if s == self.seeds[0]},
                "runs": {f"{n} K={k} seed {s}": {
                             "run_id": run.run_dir.name, "state": run.state, "lr": self.configs[n, k, s].lr,
                             "loss_options": self.configs[n, k, s].loss_options,
                             "diverged_epoch": run.status.get("diverged_epoch"),
                             "epochs_completed": len(run.history), "device": run.status.get("device")}
                         for (n, k, s), run in self.runs.items()}}

    def caption(self) -> str:
        p, sweep = get_preset(self.preset), K_SWEEP[self.preset]
        scale = "the paper's model and data" if p.paper_scale else "NOT the paper's scale"
        return (f"preset '{self.preset}' ({scale}): WRN-{p.depth}-{p.width}, "
                f"{sweep.train_per_class or 500} train images/class, {sweep.epochs} epochs, LR per "
                f"(loss, K) from a {sweep.probe_epochs}-epoch probe, seeds "
                f"{', '.join(map(str, self.seeds))}" + (" (mean, bars +- 1 sd)" if len(self.seeds) > 1 else ""))


def run_weight_sweep(preset: str = "auto", seeds=None, seed: int = 0, data_root=None,
                     runs_dir: str | Path = "runs", verify_data: bool = True, progress=None,
                     device: str = "auto", k_values=None, executor: str = "local", address=None,
                     runs_per_gpu: int | None = None) -> WeightSweepResult:
    """Probe the LRs of every (variant, K), then train it at the chosen LR for every seed;
    stored runs are read back. Classes: the first seed's draw (the K sweep's) for all seeds."""
    preset = resolve_preset(preset, device)
    seeds = seed_list(seeds, seed)
    ctx = RunContext.of(runs_dir=runs_dir, data_root=data_root, verify_data=verify_data, progress=progress,
                        executor=executor, address=address, runs_per_gpu=runs_per_gpu)
    base, info = weight_sweep_configs(preset, seeds[0], seeds[0], device, k_values)
    grids = {(name, k): lr_grid(preset, info[name, k], k) for name, k in base}
    table, configs, runs = probe_then_train(ctx, base, grids, K_SWEEP[preset].probe_epochs, seeds,
                                            lambda key: f"{key[0]} K={key[1]}", "loss-weights")
    table.insert(0, "variant", table.point.map(lambda key: key[0]))
    table.insert(1, "K", table.point.map(lambda key: key[1]))
    return WeightSweepResult(preset, table.drop(columns="point"), info, configs, runs)


def notebook_values(parameters: dict) -> dict:
    """The notebook's parameters with None replaced by NOTEBOOK_DEFAULTS; ValueError for an
    unknown name, a preset without this sweep, bad seeds or K values (before anything runs)."""
    return sweep_notebook_values(parameters, NOTEBOOK_DEFAULTS, LOSS_WEIGHTS, "loss-weight sweep", lambda preset, p:
                                 weight_sweep_configs(preset, p["seed"], p["seed"], p["device"], p["k_values"]))


def run_notebook_weight_sweep(**parameters) -> WeightSweepResult:
    """What notebook 05 runs: its parameters (None: the default) -> run_weight_sweep."""
    p = notebook_values(parameters)
    p.pop("figures_dir")
    result = run_weight_sweep(**p)
    result.figures_dir = parameters.get("figures_dir")  # None: figures/, or outputs/tiny/figures at tiny
    return result


def plot_weight_sweep(result: WeightSweepResult):
    """(a) test accuracy and (b) normalized training loss of CCQL against w (x axis 1 + w, log;
    CE dashed), one colour per K; (c) test accuracy of CE, QL, default-w CCQL and the rescaled
    square variants, grouped by K. Seeds: mean, +-1 sd."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from .plots import TRAIN_METRICS_NOTE
    t = result.final_table()
    t = t[t.state == "finished"]
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
    fig.suptitle(f"Beyond the paper: the CCQL weight and Hui & Belkin's rescaling\n{result.caption()}\n"
                 f"{TRAIN_METRICS_NOTE}", fontsize=10)
    fig.tight_layout()
    return fig


def save_weight_sweep_figure(fig, result, figures_dir=None, extra: dict | None = None):
    """PNG + PDF + the per-run final table as CSV + provenance, as fig5_loss_weights_<preset>; the LR
    probe's table beside it as fig5_loss_weights_<preset>_lr_probe.csv (sweep.save_sweep_figure)."""
    return save_sweep_figure(fig, FIGURE, result, figures_dir, extra)


__all__ = ["variants", "lr_grid", "weight_sweep_configs", "run_weight_sweep", "WeightSweepResult",
           "plot_weight_sweep", "save_weight_sweep_figure"]
