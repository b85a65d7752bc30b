"""Beyond the paper (notebook 04): final accuracy and loss against the number of classes K.

The paper shows its trend at two points (K = 25 and 100). Here every loss trains at every K of
the preset's `K_SWEEP` entry (presets.py) on random classes, with the same images per class at
every K. Because the stable LR of the summed square losses falls as K grows, one LR per loss
would measure the LR, not the loss: each (loss, K) first gets a short probe over the preset's LR
grid (`sweep.mark_best` picks), then the full run trains at the chosen LR, once per seed.

Class draws are nested: for one class seed, the K = 5 classes are among the K = 10 ones, and so
on (`data.random_classes` keeps the first K of one seeded order of the 100 classes), so a larger
K adds classes to a smaller K's problem instead of drawing a new one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .config import TrainConfig
from .losses import default_ccql_weight
from .presets import K_SWEEP, LOSS_LABELS, get_preset, resolve_preset, seed_list
from .provenance import PROJECT_ROOT
from .context import RunContext
from .runs import Run
from .sweep import final_numbers, probe_then_train, save_sweep_figure, sweep_notebook_values

LOSSES = ("ce", "ql", "ccql")
FIGURE = "fig4_k_sweep"
NOTEBOOK = "04_k_sweep.ipynb"
# The notebook's parameters and what None (their value in the notebook) means.
NOTEBOOK_DEFAULTS = {
    "preset": "auto",        # paper on a CUDA machine, quick elsewhere (sizes: presets.K_SWEEP)
    "seed": 0,               # model initialisation, data order and the random class draw
    "seeds": None,           # several seeds, e.g. [0, 1, 2]: mean and +-1 sd bands
    "k_values": None,        # a subset of the preset's K values (default: all)
    "data_root": None, "verify_data": True, "device": "auto",
    "runs_dir": str(PROJECT_ROOT / "runs"), "figures_dir": str(PROJECT_ROOT / "figures"),
    "progress": True, "executor": "local", "address": None, "runs_per_gpu": None,
    "theory_d": 64,          # the linear model's dimension: WRN-10-1's 64 features (qualitative)
    "theory_sigma": 0.3,     # the linear model's noise level
}


def trained_as(loss: str, k: int) -> str:
    """The loss that (loss, K) trains: CCQL whose default weight sqrt(K - 1) - 1 is 0 (K = 2) is
    QL by construction, so it is QL's run (one run, one LR probe), not a second one."""
    return "ql" if loss == "ccql" and default_ccql_weight(k) == 0 else loss


def k_sweep_configs(preset: str, seed: int = 0, class_seed: int = 0, device: str = "auto",
                    k_values=None) -> dict[tuple[str, int], TrainConfig]:
    """(loss, K) -> the full run's config at `preset`, its LR still the grid's first (the probe
    chooses it). k_values: a subset of the preset's (default: all of them). At K = 2 CCQL's
    entry is QL's config (`trained_as`)."""
    p, sweep = get_preset(preset), K_SWEEP[preset]
    k_values = sweep.k_values if k_values is None else tuple(k_values)
    unknown = sorted(set(k_values) - set(sweep.k_values))
    if unknown:
        raise ValueError(f"K {unknown} not in the {preset} K sweep {sweep.k_values}")
    return {(loss, k): TrainConfig(
                loss=trained_as(loss, k), classes="random", num_classes=k, class_seed=class_seed,
                seed=seed, depth=p.depth, width=p.width, batch_size=p.batch_size, epochs=sweep.epochs,
                train_per_class=sweep.train_per_class, test_per_class=sweep.test_per_class,
                lr=sweep.lr_grid[trained_as(loss, k)][0], checkpoint_every=p.checkpoint_every,
                device=device).resolved()
            for loss in LOSSES for k in k_values}


@dataclass
class KSweepResult:
    preset: str
    lr_table: pd.DataFrame                      # the probe, one row per (loss, K, LR)
    configs: dict[tuple[str, int, int], TrainConfig]   # (loss, K, seed) -> the full run
    runs: dict[tuple[str, int, int], Run]
    figures_dir: str | None = None
    theory: pd.DataFrame | None = None          # theory_min_losses, drawn beside the losses

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(s for _, _, s in self.runs))

    def final_table(self) -> pd.DataFrame:
        """One row per run: loss, K, seed, lr, state, final train/test accuracy and normalized loss."""
        rows = []
        for (loss, k, seed), run in self.runs.items():
            rows.append({"loss": LOSS_LABELS[loss], "K": k, "seed": seed, "lr": self.configs[loss, k, seed].lr,
                         "state": run.describe(), **final_numbers(run)})
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Per (loss, K): mean and sd over the seeds' finished runs (n), the chosen LR, and the
        gap to CE in test accuracy (points, mean of per-seed gaps)."""
        t = self.final_table()
        g = t.groupby(["loss", "K"], sort=False)
        out = g.agg(lr=("lr", "first"), n=("test_acc", "count"), test_acc=("test_acc", "mean"),
                    test_acc_sd=("test_acc", "std"), train_acc=("train_acc", "mean"),
                    train_loss_norm=("train_loss_norm", "mean")).reset_index()
        ce = t[t.loss == "CE"].set_index(["K", "seed"]).test_acc
        gaps = t.assign(gap=100 * (t.set_index(["K", "seed"]).index.map(ce) - t.test_acc))
        out["gap_to_ce_points"] = gaps.groupby(["loss", "K"], sort=False).gap.mean().values
        return out

    def provenance(self) -> dict[str, Any]:
        p, sweep = get_preset(self.preset), K_SWEEP[self.preset]
        return {"experiment": "k_sweep", "preset": self.preset, "seeds": self.seeds,
                "k_sweep": dataclasses.asdict(sweep), "model": f"WRN-{p.depth}-{p.width}",
                "lr_rule": "per (loss, K): the smallest probed LR within 0.5 points of the best "
                           "final test accuracy of the probe (sweep.mark_best)",
                "chosen_lrs": {f"{LOSS_LABELS[l]} K={k}": c.lr for (l, k, s), c in self.configs.items()
                               if s == self.seeds[0]},
                "theory": None if self.theory is None else {
                    "what": "minimum normalized population QL / CCQL of the linear mixture model "
                            "(theory.py), a qualitative comparison", **self.theory.attrs},
                "runs": {f"{LOSS_LABELS[l]} K={k} seed {s}": {
                             "run_id": run.run_dir.name, "state": run.state, "lr": self.configs[l, k, s].lr,
                             "diverged_epoch": run.status.get("diverged_epoch"), "epochs_completed":
                             len(run.history), "class_names": run.class_names,
                             "device": run.status.get("device")}
                         for (l, k, s), run in self.runs.items()}}

    def caption(self) -> str:
        p, sweep = get_preset(self.preset), K_SWEEP[self.preset]
        scale = "the paper's model and data" if p.paper_scale else "NOT the paper's scale"
        return (f"preset '{self.preset}' ({scale}): WRN-{p.depth}-{p.width}, "
                f"{sweep.train_per_class or 500} train images/class at every K, {sweep.epochs} epochs, "
                f"LR per (loss, K) from a {sweep.probe_epochs}-epoch probe, seeds "
                f"{', '.join(map(str, self.seeds))}" + (" (mean, band +- 1 sd)" if len(self.seeds) > 1 else ""))


def run_k_sweep(preset: str = "auto", seeds=None, seed: int = 0, data_root=None,
                runs_dir: str | Path = "runs", verify_data: bool = True, progress=None,
                device: str = "auto", k_values=None, executor: str = "local", address=None,
                runs_per_gpu: int | None = None) -> KSweepResult:
    """Probe the LRs of every (loss, K), then train it at the chosen LR for every seed
    (sweep.probe_then_train); stored runs are read back, so a second call redraws without
    training. Classes: the first seed's draw for all seeds."""
    preset = resolve_preset(preset, device)
    seeds = seed_list(seeds, seed)
    ctx = RunContext.of(runs_dir=runs_dir, data_root=data_root, verify_data=verify_data, progress=progress,
                        executor=executor, address=address, runs_per_gpu=runs_per_gpu)
    sweep = K_SWEEP[preset]
    base = k_sweep_configs(preset, seeds[0], seeds[0], device, k_values)
    table, configs, runs = probe_then_train(
        ctx, base, {(loss, k): sweep.lr_grid[trained_as(loss, k)] for loss, k in base}, sweep.probe_epochs, seeds,
        lambda key: f"{LOSS_LABELS[key[0]]} K={key[1]}", "k-sweep")
    table.insert(1, "K", table.point.map(lambda key: key[1]))
    table["loss"] = table.point.map(lambda key: key[0])  # CCQL at K = 2 probes as QL (trained_as)
    return KSweepResult(preset, table.drop(columns="point"), configs, runs)


def notebook_values(parameters: dict) -> dict:
    """The notebook's parameters with None replaced by NOTEBOOK_DEFAULTS; ValueError for an
    unknown name, a preset without this sweep, bad seeds or K values (before anything runs)."""
    return sweep_notebook_values(parameters, NOTEBOOK_DEFAULTS, K_SWEEP, "K sweep", lambda preset, p:
                                 k_sweep_configs(preset, p["seed"], p["seed"], p["device"], p["k_values"]))


def run_notebook_k_sweep(**parameters) -> KSweepResult:
    """What notebook 04 runs: its parameters (None: the default) -> run_k_sweep."""
    p = notebook_values(parameters)
    p.pop("figures_dir")
    d, sigma = p.pop("theory_d"), p.pop("theory_sigma")
    result = run_k_sweep(**p)
    result.figures_dir = parameters.get("figures_dir")  # None: figures/, or outputs/tiny/figures at tiny
    result.theory = theory_min_losses(sorted({k for _, k, _ in result.configs}), d, sigma)
    return result


def theory_min_losses(k_values, d: int, sigma: float, seed: int = 0) -> pd.DataFrame:
    """The linear model's minimum normalized population QL and CCQL (w = sqrt(K-1) - 1) against K
    (theory.py; random unit centers in d dimensions, nested in K, Gaussian noise sigma). A
    qualitative stand-in: the network is not that model; d stands for its feature dimension."""
    from .theory import ccql_normalized_min, ql_normalized_min, sample_centers
    M = sample_centers(max(k_values), d, 0.0, "random", seed=seed)
    rows = []
    for k in k_values:
        rows.append({"K": k, "loss": "QL", "min_loss_norm": ql_normalized_min(M[:k], sigma)})
        rows.append({"K": k, "loss": "CCQL",
                     "min_loss_norm": ccql_normalized_min(M[:k], sigma, default_ccql_weight(k))})
    frame = pd.DataFrame(rows)
    frame.attrs = {"d": d, "sigma": sigma, "centers": "random unit, rho 0", "seed": seed}
    return frame


def plot_k_sweep(result: KSweepResult):
    """Four panels against K (log axis): test accuracy, training accuracy, normalized training
    loss (with result.theory's minima, dotted, if set) and the gap to CE in test accuracy."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from .plots import COLOURS, TRAIN_METRICS_NOTE
    t = result.final_table()
    t = t[t.state == "finished"]
    gaps = result.summary()
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
    if result.theory is not None:
        for loss, th in result.theory.groupby("loss"):
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
    fig.suptitle(f"Beyond the paper: the losses against the number of classes K\n{result.caption()}\n"
                 f"{TRAIN_METRICS_NOTE}", fontsize=10)
    fig.tight_layout()
    return fig


def save_k_sweep_figure(fig, result, figures_dir=None, extra: dict | None = None):
    """PNG + PDF + the per-run final table as CSV + provenance, as fig4_k_sweep_<preset>; the LR
    probe's table beside it as fig4_k_sweep_<preset>_lr_probe.csv (sweep.save_sweep_figure)."""
    return save_sweep_figure(fig, FIGURE, result, figures_dir, extra)
