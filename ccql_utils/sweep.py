"""Learning-rate sweeps: short runs over a grid, the best by final test accuracy.

The paper tuned the initial LR per experiment and did not publish the values; this is how the
presets' LRs were chosen and how a user re-tunes them (results/README.md). Sweep runs go
through the run store, so an interrupted sweep resumes and a repeated one is instant.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import pandas as pd

from .config import TrainConfig
from .executor import run_keyed
from .runs import RunStore


def sweep_lr(config: TrainConfig, lrs: Sequence[float], store: RunStore,
             tolerance: float = 0.005, executor: str = "local", address: str | None = None,
             runs_per_gpu: int = 1) -> pd.DataFrame:
    """Train `config` once per LR in `lrs`; one row per LR, the best marked (`mark_best`).

    Columns: loss, lr, state, epochs, train_acc, test_acc, test_loss_norm, best, run_dir.
    The runs execute one after another or concurrently (executor, see executor.py).
    """
    table = sweep_lr_grid({config.loss: (config, lrs)}, store, tolerance, executor, address,
                          runs_per_gpu)
    return table.drop(columns="point")


def sweep_lr_grid(points: dict, store: RunStore, tolerance: float = 0.005, executor: str = "local",
                  address: str | None = None, runs_per_gpu: int = 1) -> pd.DataFrame:
    """Several sweeps handed to the executor at once: `points` maps a name to (config, LRs).

    One row per (point, LR), columns as `sweep_lr`'s plus `point`; the best marked per point.
    """
    configs = {}
    for point, (config, lrs) in points.items():
        lrs = sorted(float(x) for x in lrs)
        if not lrs:
            raise ValueError(f"{point}: a sweep needs at least one learning rate")
        bad = [x for x in lrs if not (x > 0 and math.isfinite(x))]
        if bad:
            raise ValueError(f"{point}: learning rates must be positive numbers, got {bad}")
        for lr in lrs:
            configs[point, lr] = dataclasses.replace(config, lr=lr).resolved()
    runs = run_keyed(store, configs, lambda key: f"{key[0]} lr {key[1]}", executor, address,
                     runs_per_gpu, "sweep-lr")
    rows = []
    for key, c in configs.items():
        run = runs[key]
        final = run.final()
        rows.append({"point": key[0], "loss": c.loss, "lr": c.lr, "state": run.state,
                     "epochs": len(run.history), "train_acc": final.get("train_acc"),
                     "test_acc": final.get("test_acc") if run.finished else float("nan"),
                     "test_loss_norm": final.get("test_loss_norm"), "run_dir": str(run.run_dir)})
    table = pd.DataFrame(rows)
    return pd.concat([mark_best(t, tolerance) for _, t in table.groupby("point", sort=False)],
                     ignore_index=True)


def mark_best(table: pd.DataFrame, tolerance: float = 0.005) -> pd.DataFrame:
    """`table` (one sweep: columns lr, state, test_acc) with a `best` column: True for the
    smallest LR whose final test accuracy is within `tolerance` (a fraction: 0.005 is half a
    percentage point, about the noise of one short run) of the highest among the runs that
    finished. Diverged runs never count; smaller LRs are the safer choice for the longer
    schedule that follows. No finished run: no best."""
    table = table.sort_values("lr").reset_index(drop=True)
    table["best"] = False
    finished = table[(table.state == "finished") & table.test_acc.notna()]
    if not finished.empty:
        good = finished[finished.test_acc >= finished.test_acc.max() - tolerance]
        table.loc[good.lr.idxmin(), "best"] = True
    return table


def probe_summary(history: pd.DataFrame, num_classes: int) -> pd.DataFrame:
    """One row per run of an LR probe's per-epoch table (results/lr_probe_*.csv: columns run,
    loss, lr_initial, epoch, train_loss, test_loss, test_acc).

    `trained` is True when every epoch's losses are finite and the final test accuracy is at
    least 5x chance (a run that collapses to a constant output sits at chance).
    """
    rows = []
    for run, h in history.groupby("run", sort=False):
        finite = h[["train_loss", "test_loss"]].notna().all().all()
        final = h.sort_values("epoch").iloc[-1]
        rows.append({"run": run, "loss": final.loss, "lr": final.lr_initial, "epochs": len(h),
                     "test_acc": final.test_acc,
                     "trained": bool(finite and final.test_acc >= 5 / num_classes)})
    return pd.DataFrame(rows)
