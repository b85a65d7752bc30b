"""The paper's Figs 1-3: training curves of a few labelled runs at one preset, drawn with seaborn
from one tidy frame (train solid, test dashed, one colour per run), and the final numbers beside
what the paper reports. The runs of each figure and the paper's report: presets.EXPERIMENTS.
"""
from __future__ import annotations

import pandas as pd

from .figure import Figure, FigureResult
from ..core.losses import colour_of
from .presets import OVERRIDES, experiment_configs, get_experiment, seed_list

# The preset's values a paper figure may override ({name: (default, meaning)}; None keeps the preset's)
OVERRIDE_PARAMETERS = {name: (None, "override of the preset") for name in OVERRIDES if name != "device"}
OVERRIDE_PARAMETERS["lr"] = (None, "one LR for every loss, or {loss: LR}")
OVERRIDE_PARAMETERS["w"] = (None, "CCQL's weight (default sqrt(K-1) - 1)")
OVERRIDE_PARAMETERS["class_seeds"] = (None, "several draws of the random classes, e.g. [0, 1, 2]: "
                                      "pooled with the seeds in the curves and the mammal gap")
DRAW = " (draw "  # a random-class run of a further class draw: '<label> (draw N)'


def base_label(label: str) -> str:
    """The legend label of a run, whichever class draw it trained on."""
    return label.split(DRAW)[0]


# panel -> (y label, metric name in the tidy frame, splits drawn)
PANELS = {"acc": ("accuracy", "acc", ("train", "test")),
          "loss_norm": ("normalized loss", "loss_norm", ("train", "test")),
          "train_loss_norm": ("normalized training loss", "loss_norm", ("train",))}
DASHES = {"train": "", "test": (4, 2)}
METRICS = {"train acc": "train_acc", "test acc": "test_acc",
           "train loss (norm)": "train_loss_norm", "test loss (norm)": "test_loss_norm"}


class PaperFigure(Figure):
    """One of the paper's figures: the runs of `presets.EXPERIMENTS[experiment]`, keyed (label, seed)."""

    def __init__(self, experiment: str, stem: str, notebook: str, title: str, panels=("acc", "loss_norm")):
        super().__init__(experiment, stem, notebook, title, OVERRIDE_PARAMETERS)
        self.experiment, self.panels = get_experiment(experiment), panels

    def configs(self, preset, seeds, ctx, **overrides):
        """(label, seed) -> resolved config. A seed sets the model initialisation and the data
        order; the random class draw stays the first seed's for all of them (the figure compares
        training noise on one set of classes) unless `class_seed` is given. class_seeds adds the
        random-class runs of further draws, labelled '<label> (draw N)'."""
        draws = overrides.pop("class_seeds", None)
        if len(seeds) > 1 and overrides.get("class_seed") is None:
            overrides["class_seed"] = seeds[0]

        def runs(**draw):
            return {(label, s): c for s in seeds for label, c in experiment_configs(
                self.name, preset, s, device=ctx.device, **{**overrides, **draw}).items()}
        configs = runs()
        if draws is None:
            return configs
        first = seeds[0] if overrides.get("class_seed") is None else overrides["class_seed"]
        if seed_list(draws)[0] != first:
            raise ValueError(f"class_seeds must start with the first draw, {first} (the runs the figure "
                             f"shares with the others), got {draws!r}")
        for d in seed_list(draws)[1:]:
            configs.update({(f"{label}{DRAW}{d})", s): c for (label, s), c in runs(class_seed=d).items()
                            if c.classes == "random"})
        return configs

    def describe(self, result):
        return {"experiment": self.name}

    def data(self, result) -> pd.DataFrame:
        """All runs' per-epoch metrics, with a `run` column (the label) and, with several seeds, `seed`."""
        several = len(result.seeds) > 1
        frames = [run.history.assign(run=label, **({"seed": seed} if several else {}))
                  for (label, seed), run in result.runs.items() if not run.history.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def table(self, result) -> pd.DataFrame:
        """Final numbers of each label beside the paper's report, labelled with the preset. With
        several seeds: the mean and sd over the seeds' runs that did not diverge (n of them)."""
        rows = []
        for (label,) in result.points:
            runs = {seed: run for (l, seed), run in result.runs.items() if l == label}
            config = result.configs[label, result.seeds[0]]
            row = {"run": label, "preset": result.preset}
            if len(runs) == 1:
                (run,) = runs.values()
                final = run.final()
                row.update({"state": run.describe(), "epochs": f"{len(run.history)}/{config.epochs}",
                            "lr": config.lr, **{name: final.get(m) for name, m in METRICS.items()}})
            else:
                kept = [run.final() for run in runs.values() if run.finished]
                finals = pd.DataFrame(kept) if kept else pd.DataFrame(columns=list(METRICS.values()))
                states = pd.Series([run.describe().split(" at ")[0] for run in runs.values()]).value_counts()
                row.update({"state": ", ".join(f"{n} {state}" for state, n in states.items()),
                            "seeds": ",".join(map(str, runs)), "n": len(kept), "lr": config.lr})
                for name, m in METRICS.items():
                    row[name] = finals[m].mean() if len(finals) else None
                    row[f"{name} sd"] = finals[m].std(ddof=1) if len(finals) > 1 else None
            row["paper reports (WRN-28-10, 200 epochs)"] = self.experiment.paper_reports[base_label(label)]
            rows.append(row)
        return pd.DataFrame(rows)

    def plot(self, result):
        """One subplot per panel; a diverged run is named "diverged at epoch N" in the legend and
        marked with a cross."""
        import matplotlib.pyplot as plt
        import seaborn as sns
        from matplotlib.ticker import MaxNLocator
        frame = tidy_histories(result)
        palette = {name: colour_of(base_label(name).split(" (")[0]) for name in frame.run.unique()}
        fig, axes = plt.subplots(1, len(self.panels), figsize=(5.2 * len(self.panels), 3.9), squeeze=False)
        for ax, panel, letter in zip(axes[0], self.panels, "abcdef"):
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
                            color=colour_of(base_label(label)), transform=ax.get_xaxis_transform(), clip_on=False)
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
        return self.finish(fig, result)


def tidy_histories(result: FigureResult) -> pd.DataFrame:
    """One row per run x seed x epoch x split x metric (columns run, seed, epoch, split, metric,
    value); a diverged run's label gets "(diverged at epoch N (lr X))", a line of its own."""
    columns = ["run", "seed", "epoch", "split", "metric", "value"]
    rows = []
    for (label, seed), run in result.runs.items():
        if run.history.empty:
            continue
        name = result.name((label, seed)) + f" ({run.describe()})" if run.diverged else base_label(label)
        for split in ("train", "test"):
            for metric in ("acc", "loss_norm"):
                column = f"{split}_{metric}"
                rows.append(run.history[["epoch", column]].rename(columns={column: "value"})
                            .assign(run=name, seed=seed, split=split, metric=metric))
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def class_names(result: FigureResult) -> dict[str, list[str]]:
    """label -> the class names of its runs (one class draw for all seeds of a label)."""
    return {label: run.class_names for (label, seed), run in result.runs.items() if seed == result.seeds[0]}


def subset_gaps(result: FigureResult, first: str = "random", second: str = "mammals") -> pd.DataFrame:
    """Per loss of a figure labelled '<loss>, <subset>' (Fig 3): the final test accuracy on
    `first` minus on `second`, in points, paired by seed (each class draw of `first` with the same
    seed on `second`); mean, sd and n over the pairs where both finished, beside each subset's mean
    accuracy (%) and, with several class draws, the sd of `first`'s accuracy over the draws."""
    rows = []
    for loss in dict.fromkeys(base_label(label).split(", ")[0] for (label,) in result.points):
        acc = {subset: {(label, seed): 100 * run.final()["test_acc"] for (label, seed), run in result.runs.items()
                        if base_label(label) == f"{loss}, {subset}" and run.finished} for subset in (first, second)}
        by_seed = {seed: a for (_, seed), a in acc[second].items()}
        gaps = pd.Series([a - by_seed[seed] for (_, seed), a in acc[first].items() if seed in by_seed], dtype=float)
        draws = pd.Series(acc[first], dtype=float).groupby(level=0).mean() if acc[first] else pd.Series(dtype=float)
        rows.append({"loss": loss, f"{first} test acc": pd.Series(acc[first], dtype=float).mean(),
                     f"{second} test acc": pd.Series(acc[second], dtype=float).mean(),
                     "gap (points)": gaps.mean(), "gap sd": gaps.std(ddof=1) if len(gaps) > 1 else None,
                     "n": len(gaps), **({f"{first} sd over draws": draws.std(ddof=1)} if len(draws) > 1 else {})})
    return pd.DataFrame(rows)


PAPER_FIGURES = (
    PaperFigure("k25_random", "fig1_k25_random", "01_k25_random.ipynb", "Fig 1: K = 25 random classes"),
    PaperFigure("k100", "fig2_k100", "02_k100.ipynb", "Fig 2: all K = 100 classes", ("acc", "train_loss_norm")),
    PaperFigure("mammals_vs_random", "fig3_mammals_vs_random", "03_mammals_vs_random.ipynb",
                "Fig 3: 25 random vs 25 mammal classes (the paper: QL; CE and CCQL: controls)"),
)
