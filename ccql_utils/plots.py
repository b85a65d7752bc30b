"""Figure layouts of the paper, drawn with seaborn from one tidy frame: train solid, test dashed,
one colour per run, accuracy and normalized-loss panels."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from .experiments import ExperimentResult
from .presets import get_experiment
from .provenance import save_figure

COLOURS = {"CE": "tab:blue", "QL": "tab:red", "CCQL": "tab:green"}
# Fig 3: each loss in its colour on the random classes, a lighter shade on the mammals
COLOURS.update({f"{loss}, {subset}": colour for loss, shades in {
    "CE": ("tab:blue", "lightskyblue"), "QL": ("tab:red", "lightsalmon"),
    "CCQL": ("tab:green", "yellowgreen")}.items() for subset, colour in zip(("random", "mammals"), shades)})
# panel -> (y label, metric name in the tidy frame, splits drawn)
PANELS = {
    "acc": ("accuracy", "acc", ("train", "test")),
    "loss_norm": ("normalized loss", "loss_norm", ("train", "test")),
    "train_loss_norm": ("normalized training loss", "loss_norm", ("train",)),
}
DASHES = {"train": "", "test": (4, 2)}
# What "train" means in every training figure (train.py): the paper plots it the same way.
TRAIN_METRICS_NOTE = ("train = running mean over each epoch's augmented batches in train mode "
                      "(not a clean pass over the training set)")


def tidy_histories(result: ExperimentResult) -> pd.DataFrame:
    """One row per run x seed x epoch x split x metric: columns run, seed, epoch, split, metric,
    value (seaborn draws the seeds of a run as their mean and a +-1 sd band).

    `run` is the legend label, with "(diverged at epoch N (lr X))" appended to a diverged run
    (its own line, apart from its label's other seeds).
    """
    columns = ["run", "seed", "epoch", "split", "metric", "value"]
    rows = []
    for (label, seed), run in result.runs.items():
        if run.history.empty:
            continue
        name = result.name(label, seed) + f" ({run.describe()})" if run.diverged else label
        for split in ("train", "test"):
            for metric in ("acc", "loss_norm"):
                column = f"{split}_{metric}"
                rows.append(run.history[["epoch", column]].rename(columns={column: "value"})
                            .assign(run=name, seed=seed, split=split, metric=metric))
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.concat(rows, ignore_index=True)[columns]


def plot_experiment(result: ExperimentResult, panels=("acc", "loss_norm"), title: str | None = None):
    """One subplot per panel ('acc', 'loss_norm', 'train_loss_norm'); returns the figure.

    A diverged run is named "diverged at epoch N" in the legend and marked with a cross there.
    """
    frame = tidy_histories(result)
    palette = {name: COLOURS.get(name.split(" (")[0]) for name in frame.run.unique()}
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.9), squeeze=False)
    for ax, panel, letter in zip(axes[0], panels, "abcdef"):
        ylabel, metric, splits = PANELS[panel]
        data = frame[(frame.metric == metric) & frame.split.isin(splits)]
        if data.empty:  # nothing trained yet: the axis the runs will fill
            ax.set_xlim(0, max(c.epochs for c in result.configs.values()))
        else:
            sns.lineplot(data=data, x="epoch", y="value", hue="run", style="split", palette=palette,
                         dashes=DASHES, errorbar="sd", ax=ax)
        for (label, seed), run in result.runs.items():
            if run.diverged:  # its last values are NaN: mark the epoch at the top of the panel
                ax.plot([run.status.get("diverged_epoch")], [0.95], marker="x", ms=9, mew=2,
                        color=COLOURS.get(label), transform=ax.get_xaxis_transform(), clip_on=False)
        if panel == "acc":  # all of [0, 1] when the curves use it, else room to tell them apart
            top = data.value.max() if not data.empty else 1.0
            ax.set_ylim(0, 1.02 if top > 0.5 else min(1.02, 1.2 * top + 0.02))
            k = next(iter(result.configs.values())).num_classes
            ax.axhline(1 / k, color="grey", lw=0.6, ls=":", label=f"chance (1/{k})")
        else:
            ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"({letter}) {ylabel}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title = get_experiment(result.experiment).title if title is None else title
    fig.suptitle(f"{title}\n{result.caption()}\n{TRAIN_METRICS_NOTE}", fontsize=10)
    fig.tight_layout()
    return fig


def save_experiment_figure(fig, result: ExperimentResult, figures_dir=None, extra: dict | None = None):
    """Save PNG + PDF + the histories as CSV + provenance, as <figure>_<preset> (presets.EXPERIMENTS)."""
    name = f"{get_experiment(result.experiment).figure}_{result.preset}"
    params = {**result.provenance(), **(extra or {})}
    return save_figure(fig, name, data=result.histories(), params=params,
                       figures_dir=figures_dir or result.figures_dir, caption=result.caption())
