"""Figure layouts of the paper: train solid, test dashed, one colour per run, normalized losses."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from .experiments import ExperimentResult
from .provenance import save_figure

COLOURS = {"CE": "tab:blue", "QL": "tab:red", "CCQL": "tab:green",
           "25 random classes": "tab:red", "25 mammal classes": "tab:purple"}
PANELS = {
    "acc": ("accuracy", "train_acc", "test_acc"),
    "loss_norm": ("normalized loss", "train_loss_norm", "test_loss_norm"),
    "train_loss_norm": ("normalized training loss", "train_loss_norm", None),
}


def plot_experiment(result: ExperimentResult, panels=("acc", "loss_norm"), title: str = ""):
    """One subplot per panel ('acc', 'loss_norm', 'train_loss_norm'); returns the figure.

    Each run is one colour; train is solid, test dashed. A diverged run is named "diverged at
    epoch N" in the legend and marked with a cross at that epoch.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9), squeeze=False)
    for ax, panel, letter in zip(axes[0], panels, "abcdef"):
        ylabel, train_col, test_col = PANELS[panel]
        for label, run in result.runs.items():
            h = run.history
            if h.empty:
                continue
            colour = COLOURS.get(label)
            name = label + (f" ({run.describe()})" if run.diverged else "")
            ax.plot(h.epoch, h[train_col], color=colour, ls="-", label=f"{name} train")
            if test_col:
                ax.plot(h.epoch, h[test_col], color=colour, ls="--", label=f"{name} test")
            if run.diverged:  # a cross where the loss became non-finite (its values are NaN)
                ax.plot([run.status.get("diverged_epoch")], [0.95], marker="x", ms=9, mew=2,
                        color=colour, transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(f"({letter}) {ylabel}", fontsize=10)
        if panel == "acc":
            ax.set_ylim(0, 1.02)
            k = next(iter(result.configs.values())).num_classes
            ax.axhline(1 / k, color="grey", lw=0.6, ls=":", label=f"chance (1/{k})")
        else:
            ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\n{result.caption()}", fontsize=10)
    fig.tight_layout()
    return fig


def save_experiment_figure(fig, result: ExperimentResult, name: str,
                           figures_dir: str | Path | None = None, extra: dict | None = None):
    """Save PNG + PDF + the histories as CSV + provenance (preset, configs, class names, ...)."""
    params = {**result.provenance(), **(extra or {})}
    return save_figure(fig, name, data=result.histories(), params=params,
                       figures_dir=figures_dir, caption=result.caption())
