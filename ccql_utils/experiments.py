"""Running a preset experiment and summarising it: what the notebooks 01-03 call.

`run_experiment(name, preset, ...)` resolves the preset (with overrides), obtains every run from
the run store (stored, resumed or trained), and returns an `ExperimentResult` whose
`results_table()` puts the final numbers beside what the paper reports.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .data import load_cifar100
from .presets import describe, experiment_configs, get_preset
from .runs import FINAL_STATES, Run, get_run
from .train import TrainConfig

# What the paper reports (REPRODUCTION.md, "What the paper reports"), per experiment and run.
PAPER_REPORTS = {
    "k25_random": {
        "CE": "~100% train acc; best test accuracy of the three",
        "QL": "~100% train acc; slowest to train, lowest test acc; normalized test loss stays near 1",
        "CCQL": "~100% train acc; trains faster and tests better than QL",
    },
    "k100": {
        "CE": "100% train acc (only CE); 79.5-81.5% test acc is the public WRN-28-10 yardstick",
        "QL": "stagnates: < 20% test acc",
        "CCQL": "> 90% train acc, ~65% test acc",
    },
    "mammals_vs_random": {
        "25 random classes": "100% train acc; trains faster and tests better than mammals",
        "25 mammal classes": "100% train acc; trains slower, lower test acc",
    },
}


def resolve_preset(preset: str, device: str = "auto") -> str:
    """'auto' -> 'paper' when a CUDA GPU will be used, else 'quick'."""
    if preset != "auto":
        get_preset(preset)
        return preset
    import torch
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return "paper" if cuda else "quick"


@dataclass
class ExperimentResult:
    """The runs of one experiment at one preset, keyed by legend label."""

    experiment: str
    preset: str
    configs: dict[str, TrainConfig]
    runs: dict[str, Run]

    def histories(self) -> pd.DataFrame:
        """All runs' per-epoch metrics in one frame, with a `run` column (the legend label)."""
        frames = [run.history.assign(run=label) for label, run in self.runs.items()
                  if not run.history.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def results_table(self) -> pd.DataFrame:
        """Final numbers of each run beside the paper's report, labelled with the preset."""
        rows = []
        for label, run in self.runs.items():
            final = run.final()
            rows.append({
                "run": label, "preset": self.preset, "state": run.state,
                "epochs": f"{len(run.history)}/{self.configs[label].epochs}",
                "train acc": final.get("train_acc"), "test acc": final.get("test_acc"),
                "train loss (norm)": final.get("train_loss_norm"),
                "test loss (norm)": final.get("test_loss_norm"),
                "paper reports (WRN-28-10, 200 epochs)": PAPER_REPORTS[self.experiment][label]})
        return pd.DataFrame(rows)

    def class_names(self) -> dict[str, list[str]]:
        return {label: run.class_names for label, run in self.runs.items()}

    def provenance(self) -> dict[str, Any]:
        """Everything that made the figure: preset, each run's configuration, class names,
        devices, epochs completed, diverged runs."""
        p = get_preset(self.preset)
        return {
            "experiment": self.experiment, "preset": self.preset,
            "preset_description": p.description, "lr_provenance": p.lr_provenance,
            "runs": {label: {"run_id": run.run_dir.name, "config": describe(self.configs)[label],
                             "class_names": run.class_names, "state": run.state,
                             "epochs_completed": len(run.history),
                             "device": run.status.get("device"),
                             "diverged_epoch": run.status.get("diverged_epoch")}
                     for label, run in self.runs.items()},
            "diverged_runs": [label for label, run in self.runs.items() if run.diverged],
        }

    def caption(self) -> str:
        """One line on the scale that made the figure (so a quick run is never taken for the paper's)."""
        c = next(iter(self.configs.values()))
        per_class = c.train_per_class or 500
        scale = "the paper's scale" if self.preset == "paper" else "NOT the paper's scale"
        return (f"preset '{self.preset}' ({scale}): WRN-{c.depth}-{c.width}, {per_class} train "
                f"images/class, {c.epochs} epochs, seed {c.seed}")


def run_experiment(experiment: str, preset: str = "auto", seed: int = 0,
                   data_root: str | Path | None = None, runs_dir: str | Path = "runs",
                   verify_data: bool = True, progress: bool | None = None,
                   **overrides) -> ExperimentResult:
    """Obtain every run of `experiment` (see presets.experiment_configs for the overrides).

    Finished runs are read from `runs_dir` without loading data; others resume or train.
    """
    preset = resolve_preset(preset, overrides.get("device") or "auto")
    configs = experiment_configs(experiment, preset, seed=seed, **overrides)
    runs: dict[str, Run] = {}
    data = None
    for label, config in configs.items():
        run = get_run(config, runs_dir=runs_dir, data_root=data_root, verify_data=verify_data,
                      train=False)
        if run.state not in FINAL_STATES:
            data = data or load_cifar100(data_root, verify=verify_data)  # loaded once, shared
            if progress is not False:
                print(f"[{experiment}] {label}: {config.run_id()} ({run.state}, "
                      f"{len(run.history)}/{config.epochs} epochs stored)", flush=True)
            run = get_run(config, runs_dir=runs_dir, data=data, progress=progress)
        runs[label] = run
    return ExperimentResult(experiment, preset, configs, runs)
