"""Running a preset experiment and summarising it: what the notebooks 01-03 and the CLI call.

`run_experiment(name, preset, ...)` resolves the preset (with overrides), obtains every run from
the run store (stored, resumed or trained), and returns an `ExperimentResult` whose
`results_table()` puts the final numbers beside what the paper reports.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import TrainConfig
from .context import RunContext
from .estimates import check_cpu_time
from .progress import progress_mode
from .presets import experiment_seed_configs, get_experiment, get_preset, resolve_preset
from .provenance import PROJECT_ROOT
from .runs import FINAL_STATES, Run
from .scheduler import obtain

# The experiment notebooks' parameters and what None (their value in every notebook) means.
# Paths are absolute so a notebook works wherever JupyterLab or papermill starts it.
NOTEBOOK_DEFAULTS = {
    "preset": "auto",        # paper on a CUDA machine, quick elsewhere
    "seed": 0,               # model initialisation, data order and the random class draw
    "seeds": None,           # several seeds, e.g. [0, 1, 2]: mean and +-1 sd bands (classes: the first's)
    "data_root": None,       # $CCQL_DATA_ROOT, then data/ in the repository (data.py)
    "verify_data": True,     # False accepts a copy that is not CIFAR-100's content (test stand-ins)
    "device": "auto",
    "runs_dir": str(PROJECT_ROOT / "runs"),
    "figures_dir": str(PROJECT_ROOT / "figures"),
    "progress": True,
    "executor": "local",     # local: one run after another here; ray: concurrently on a Ray cluster
    "address": None,         # a Ray cluster to join (default: $RAY_ADDRESS, else a local one)
    "runs_per_gpu": None,    # runs stacked on one GPU (scheduler.py); None: 32 small ones on a GPU, else 1
    # overrides of the preset; None keeps the preset's value
    "epochs": None, "depth": None, "width": None, "train_per_class": None, "lr": None, "w": None,
}


def run_name(label: str, seed: int, several_seeds: bool) -> str:
    """How a run is named in tables, messages and progress: its label, and its seed when an
    experiment has several."""
    return f"{label} (seed {seed})" if several_seeds else label


@dataclass
class ExperimentResult:
    """The runs of one experiment at one preset, keyed by (legend label, seed)."""

    experiment: str
    preset: str
    configs: dict[tuple[str, int], TrainConfig]
    runs: dict[tuple[str, int], Run]
    figures_dir: str | None = None  # where save_figure writes (None: figures/ in the repository)

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(label for label, _ in self.runs))

    @property
    def seeds(self) -> list[int]:
        return list(dict.fromkeys(seed for _, seed in self.runs))

    def name(self, label: str, seed: int) -> str:
        return run_name(label, seed, several_seeds=len(self.seeds) > 1)

    def histories(self) -> pd.DataFrame:
        """All runs' per-epoch metrics in one frame, with a `run` column (the legend label) and,
        with several seeds, a `seed` column."""
        several = len(self.seeds) > 1
        frames = [run.history.assign(run=label, **({"seed": seed} if several else {}))
                  for (label, seed), run in self.runs.items() if not run.history.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def results_table(self) -> pd.DataFrame:
        """Final numbers of each run beside the paper's report, labelled with the preset.

        With several seeds: one row per label, the mean and standard deviation over the seeds'
        runs that did not diverge (n of them), and how many diverged."""
        reports = get_experiment(self.experiment).paper_reports
        metrics = {"train acc": "train_acc", "test acc": "test_acc",
                   "train loss (norm)": "train_loss_norm", "test loss (norm)": "test_loss_norm"}
        rows = []
        for label in self.labels:
            runs = {seed: run for (l, seed), run in self.runs.items() if l == label}
            config = self.configs[label, self.seeds[0]]
            row = {"run": label, "preset": self.preset}
            if len(runs) == 1:
                (run,) = runs.values()
                final = run.final()
                row.update({"state": run.describe(), "epochs": f"{len(run.history)}/{config.epochs}",
                            "lr": config.lr, **{name: final.get(m) for name, m in metrics.items()}})
            else:
                kept = [run.final() for run in runs.values() if run.finished]
                finals = pd.DataFrame(kept) if kept else pd.DataFrame(columns=list(metrics.values()))
                states = pd.Series([run.describe().split(" at ")[0] for run in runs.values()]).value_counts()
                row.update({"state": ", ".join(f"{n} {state}" for state, n in states.items()),
                            "seeds": ",".join(map(str, runs)), "n": len(kept), "lr": config.lr})
                for name, m in metrics.items():
                    row[name] = finals[m].mean() if len(finals) else None
                    row[f"{name} sd"] = finals[m].std(ddof=1) if len(finals) > 1 else None
            row["paper reports (WRN-28-10, 200 epochs)"] = reports[label]
            rows.append(row)
        return pd.DataFrame(rows)

    def class_names(self) -> dict[str, list[str]]:
        """label -> the class names of its runs (one class draw for all seeds of a label)."""
        return {label: run.class_names for (label, seed), run in self.runs.items()
                if seed == self.seeds[0]}

    def missing(self) -> list[str]:
        """Names of the runs not (yet) finished or diverged: drawn as far as they got, if at all."""
        return [self.name(label, seed) for (label, seed), run in self.runs.items()
                if run.state not in FINAL_STATES]

    def diverged(self) -> dict[str, str]:
        """name -> 'diverged at epoch N (lr X)' for each diverged run."""
        return {self.name(label, seed): run.describe() for (label, seed), run in self.runs.items()
                if run.diverged}

    def provenance(self) -> dict[str, Any]:
        """Everything that made the figure: preset, seeds, each run's configuration, class names,
        devices, epochs completed, diverged runs."""
        p = get_preset(self.preset)
        return {
            "experiment": self.experiment, "preset": self.preset, "seeds": self.seeds,
            "preset_description": p.description, "lr_provenance": p.lr_provenance,
            "runs": {self.name(label, seed): {
                         "label": label, "seed": seed, "run_id": run.run_dir.name,
                         "config": self.configs[label, seed].identity(),
                         "class_names": run.class_names, "state": run.state,
                         "epochs_completed": len(run.history), "device": run.status.get("device"),
                         "torch": run.status.get("torch"),  # the training machine's (None: not recorded)
                         "diverged_epoch": run.status.get("diverged_epoch")}
                     for (label, seed), run in self.runs.items()},
            "diverged_runs": list(self.diverged()),
            "missing_runs": self.missing(),
        }

    def caption(self) -> str:
        """One line on the scale and the card that made the figure (so a quick run is never taken
        for the paper's)."""
        c = next(iter(self.configs.values()))
        p = get_preset(self.preset)
        scale = "the paper's model and data" if p.paper_scale else "NOT the paper's scale"
        seeds = (f"seed {self.seeds[0]}" if len(self.seeds) == 1 else
                 f"seeds {', '.join(map(str, self.seeds))} (mean, band +- 1 sd)")
        devices = sorted({run.status["device"] for run in self.runs.values() if run.status.get("device")})
        missing = self.missing()
        return (f"preset '{self.preset}' ({scale}): WRN-{c.depth}-{c.width}, "
                f"{c.train_per_class or 500} train images/class, {c.epochs} epochs, {seeds}"
                + (f"; trained on {', '.join(devices)}" if devices else "")
                + (f"\nNOT YET TRAINED: {', '.join(missing)}" if missing else ""))


def subset_gaps(result: ExperimentResult, first: str = "random", second: str = "mammals") -> pd.DataFrame:
    """Per loss of an experiment labelled '<loss>, <subset>' (Fig 3): the final test accuracy on
    `first` minus on `second`, in points, paired by seed; mean, sd and n over the seeds where both
    finished, beside each subset's mean accuracy (%)."""
    rows = []
    losses = dict.fromkeys(label.split(", ")[0] for label in result.labels)
    for loss in losses:
        acc = {subset: {seed: 100 * run.final()["test_acc"] for (label, seed), run in result.runs.items()
                        if label == f"{loss}, {subset}" and run.finished} for subset in (first, second)}
        paired = sorted(set(acc[first]) & set(acc[second]))
        gaps = pd.Series([acc[first][s] - acc[second][s] for s in paired], dtype=float)
        rows.append({"loss": loss, f"{first} test acc": pd.Series(acc[first], dtype=float).mean(),
                     f"{second} test acc": pd.Series(acc[second], dtype=float).mean(),
                     "gap (points)": gaps.mean(), "gap sd": gaps.std(ddof=1) if len(gaps) > 1 else None,
                     "n": len(gaps)})
    return pd.DataFrame(rows)


def run_experiment(experiment: str, preset: str = "auto", seed: int = 0, seeds=None,
                   data_root: str | Path | None = None, runs_dir: str | Path = "runs",
                   verify_data: bool = True, progress: bool | None = None,
                   executor: str = "local", address: str | None = None, runs_per_gpu: int | None = None,
                   train: bool | None = None, **overrides) -> ExperimentResult:
    """Obtain every run of `experiment` for each of `seeds` (None: [seed]); see
    presets.experiment_seed_configs for the seeds and presets.experiment_configs for the overrides.

    Finished runs are read from `runs_dir` without loading data; others resume or train, one
    after another (executor 'local') or concurrently on a Ray cluster ('ray', see scheduler.py).
    train: None trains what is missing unless that would take hours on a CPU that device 'auto'
    chose (a paper-scale preset on a laptop): then it draws from the stored runs alone and says
    which are missing (`ExperimentResult.missing`); False never trains; True always does.
    """
    preset = resolve_preset(preset, overrides.get("device") or "auto")
    configs = experiment_seed_configs(experiment, preset, seeds, seed, **overrides)
    several = len({s for _, s in configs}) > 1
    ctx = RunContext.of(runs_dir=runs_dir, data_root=data_root, verify_data=verify_data, progress=progress,
                        executor=executor, address=address, runs_per_gpu=runs_per_gpu)
    store = ctx.store
    if train is not True:
        stored = {key: store.load(c) for key, c in configs.items()}
        todo = [c for key, c in configs.items() if stored[key].state not in FINAL_STATES]
        if train is None and todo:
            try:
                check_cpu_time(todo)
            except ValueError as exc:
                train = False
                print(f"[{experiment}] {exc}.", file=sys.stderr)
        if train is False:
            result = ExperimentResult(experiment, preset, configs, stored)
            if todo and progress_mode(progress) != "off":
                print(f"[{experiment}] drawing the {len(configs) - len(todo)} stored run(s); missing: "
                      f"{', '.join(result.missing())}", file=sys.stderr)
            return result
    runs = obtain(ctx, configs, experiment, lambda key: run_name(*key, several_seeds=several))
    return ExperimentResult(experiment, preset, configs, runs)


def run_notebook_experiment(experiment: str, **parameters) -> ExperimentResult:
    """What an experiment notebook runs: its parameters (names of NOTEBOOK_DEFAULTS; None takes
    the default) -> run_experiment. The result remembers figures_dir for `save_figure`."""
    unknown = sorted(set(parameters) - set(NOTEBOOK_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; valid: {', '.join(NOTEBOOK_DEFAULTS)}")
    p = {k: NOTEBOOK_DEFAULTS[k] if parameters.get(k) is None else parameters[k] for k in NOTEBOOK_DEFAULTS}
    figures_dir = p.pop("figures_dir")
    result = run_experiment(experiment, p.pop("preset"), **p)
    if parameters.get("figures_dir") is None and result.preset == "tiny":
        figures_dir = str(PROJECT_ROOT / "outputs" / "tiny" / "figures")  # never beside committed figures
    result.figures_dir = figures_dir
    return result
