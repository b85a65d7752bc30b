"""Running a preset experiment and summarising it: what the notebooks 01-03 and the CLI call.

`run_experiment(name, preset, ...)` resolves the preset (with overrides), obtains every run from
the run store (stored, resumed or trained), and returns an `ExperimentResult` whose
`results_table()` puts the final numbers beside what the paper reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .config import TrainConfig
from .executor import run_configs
from .presets import experiment_configs, get_experiment, get_preset, resolve_preset
from .provenance import PROJECT_ROOT
from .runs import Run, RunStore

# The experiment notebooks' parameters and what None (their value in every notebook) means.
# Paths are absolute so a notebook works wherever JupyterLab or papermill starts it.
NOTEBOOK_DEFAULTS = {
    "preset": "auto",        # paper on a CUDA machine, quick elsewhere
    "seed": 0,               # model initialisation, data order and the random class draw
    "data_root": None,       # $CCQL_DATA_ROOT, then data/ in the repository (data.py)
    "verify_data": True,     # False accepts a copy that is not CIFAR-100's content (test stand-ins)
    "device": "auto",
    "runs_dir": str(PROJECT_ROOT / "runs"),
    "figures_dir": str(PROJECT_ROOT / "figures"),
    "progress": True,
    "executor": "local",     # local: one run after another here; ray: concurrently on a Ray cluster
    "address": None,         # a Ray cluster to join (default: $RAY_ADDRESS, else a local one)
    "runs_per_gpu": 1,       # with ray: runs sharing one GPU
    # overrides of the preset; None keeps the preset's value
    "epochs": None, "depth": None, "width": None, "train_per_class": None, "lr": None, "w": None,
}


@dataclass
class ExperimentResult:
    """The runs of one experiment at one preset, keyed by legend label."""

    experiment: str
    preset: str
    configs: dict[str, TrainConfig]
    runs: dict[str, Run]
    figures_dir: str | None = None  # where save_figure writes (None: figures/ in the repository)

    def histories(self) -> pd.DataFrame:
        """All runs' per-epoch metrics in one frame, with a `run` column (the legend label)."""
        frames = [run.history.assign(run=label) for label, run in self.runs.items()
                  if not run.history.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def results_table(self) -> pd.DataFrame:
        """Final numbers of each run beside the paper's report, labelled with the preset."""
        reports = get_experiment(self.experiment).paper_reports
        rows = []
        for label, run in self.runs.items():
            final = run.final()
            rows.append({
                "run": label, "preset": self.preset, "state": run.describe(),
                "epochs": f"{len(run.history)}/{self.configs[label].epochs}",
                "lr": self.configs[label].lr,
                "train acc": final.get("train_acc"), "test acc": final.get("test_acc"),
                "train loss (norm)": final.get("train_loss_norm"),
                "test loss (norm)": final.get("test_loss_norm"),
                "paper reports (WRN-28-10, 200 epochs)": reports[label]})
        return pd.DataFrame(rows)

    def class_names(self) -> dict[str, list[str]]:
        return {label: run.class_names for label, run in self.runs.items()}

    def diverged(self) -> dict[str, str]:
        """label -> 'diverged at epoch N (lr X)' for each diverged run."""
        return {label: run.describe() for label, run in self.runs.items() if run.diverged}

    def provenance(self) -> dict[str, Any]:
        """Everything that made the figure: preset, each run's configuration, class names,
        devices, epochs completed, diverged runs."""
        p = get_preset(self.preset)
        return {
            "experiment": self.experiment, "preset": self.preset,
            "preset_description": p.description, "lr_provenance": p.lr_provenance,
            "runs": {label: {"run_id": run.run_dir.name, "config": self.configs[label].identity(),
                             "class_names": run.class_names, "state": run.state,
                             "epochs_completed": len(run.history),
                             "device": run.status.get("device"),
                             "diverged_epoch": run.status.get("diverged_epoch")}
                     for label, run in self.runs.items()},
            "diverged_runs": list(self.diverged()),
        }

    def caption(self) -> str:
        """One line on the scale and the card that made the figure (so a quick run is never taken
        for the paper's)."""
        c = next(iter(self.configs.values()))
        p = get_preset(self.preset)
        scale = "the paper's model and data" if p.paper_scale else "NOT the paper's scale"
        devices = sorted({run.status["device"] for run in self.runs.values() if run.status.get("device")})
        return (f"preset '{self.preset}' ({scale}): WRN-{c.depth}-{c.width}, "
                f"{c.train_per_class or 500} train images/class, {c.epochs} epochs, seed {c.seed}"
                + (f"; trained on {', '.join(devices)}" if devices else ""))


def run_experiment(experiment: str, preset: str = "auto", seed: int = 0,
                   data_root: str | Path | None = None, runs_dir: str | Path = "runs",
                   verify_data: bool = True, progress: bool | None = None,
                   executor: str = "local", address: str | None = None, runs_per_gpu: int = 1,
                   **overrides) -> ExperimentResult:
    """Obtain every run of `experiment` (see presets.experiment_configs for the overrides).

    Finished runs are read from `runs_dir` without loading data; others resume or train, one
    after another (executor 'local') or concurrently on a Ray cluster ('ray', see executor.py).
    """
    preset = resolve_preset(preset, overrides.get("device") or "auto")
    configs = experiment_configs(experiment, preset, seed=seed, **overrides)
    store = RunStore(runs_dir, data_root=data_root, verify_data=verify_data, progress=progress)
    runs = run_configs(store, configs, executor, address, runs_per_gpu, experiment)
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
