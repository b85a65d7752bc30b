"""Learning-rate sweeps: short runs over a grid, the best by final test accuracy.

The paper tuned the initial LR per experiment and did not publish the values; this is how the
presets' LRs were chosen and how a user re-tunes them. Sweep runs go through the run store, so
an interrupted sweep resumes and a repeated one is instant.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import pandas as pd

from .data import Cifar100
from .runs import get_run
from .train import TrainConfig


def sweep_lr(config: TrainConfig, lrs: Sequence[float], runs_dir: str | Path = "runs",
             data: Cifar100 | None = None, data_root=None, progress: bool | None = None,
             tolerance: float = 0.005) -> pd.DataFrame:
    """Train `config` once per LR in `lrs`; one row per LR, the best marked.

    Columns: loss, lr, state, epochs, train_acc, test_acc, test_loss_norm, best, run_dir. The
    best is the smallest LR whose final test accuracy is within `tolerance` (a fraction: 0.005
    is half a percentage point, about the noise of one short run) of the highest among runs
    that finished; smaller LRs are the safer choice for the longer schedule that follows.
    """
    if not lrs:
        raise ValueError("sweep_lr needs at least one learning rate")
    rows = []
    for lr in sorted(float(x) for x in lrs):
        run = get_run(dataclasses.replace(config, lr=lr), runs_dir=runs_dir, data=data,
                      data_root=data_root, progress=progress)
        final = run.final()
        rows.append({"loss": config.loss, "lr": lr, "state": run.state, "epochs": len(run.history),
                     "train_acc": final.get("train_acc"),
                     "test_acc": final.get("test_acc") if run.finished else float("nan"),
                     "test_loss_norm": final.get("test_loss_norm"), "run_dir": str(run.run_dir)})
    table = pd.DataFrame(rows)
    table["best"] = False
    finished = table[table.state == "finished"]
    if not finished.empty:
        good = finished[finished.test_acc >= finished.test_acc.max() - tolerance]
        table.loc[good.lr.idxmin(), "best"] = True
    return table
