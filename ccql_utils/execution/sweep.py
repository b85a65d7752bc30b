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

from ..core.config import TrainConfig
from .context import RunContext
from .scheduler import obtain

# The best LR: the smallest within this much final test accuracy of the top (a fraction: half a
# percentage point, about the noise of one short run).
TOLERANCE = 0.005


def sweep_lr(config: TrainConfig, lrs: Sequence[float], ctx: RunContext,
             tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Train `config` once per LR in `lrs` (where and how: `ctx`, see scheduler.py); one row per
    LR, the best marked (`mark_best`). Columns: loss, lr, state, epochs, train_acc, test_acc,
    test_loss_norm, best, run_dir.
    """
    return sweep_lr_grid({config.loss: (config, lrs)}, ctx, tolerance).drop(columns="point")


def sweep_lr_grid(points: dict, ctx: RunContext, tolerance: float = TOLERANCE, name_of=str,
                  train: bool | None = True) -> pd.DataFrame:
    """Several sweeps obtained at once, `points`: key -> (config, LRs). Rows as `sweep_lr`'s plus
    `point` (the key), the best marked per point; name_of(point) names a point in progress lines,
    train as scheduler.obtain's."""
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
    runs = obtain(ctx, configs, "sweep-lr", lambda key: f"{name_of(key[0])} lr {key[1]}", train)
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


def probe(ctx: RunContext, base: dict, grids: dict, probe_epochs: int, seeds, name_of=str, train=True):
    """The LR probe of the sweep figures (notebooks 04-06): every key of `base` (key -> config)
    trained for `probe_epochs` at each of its LRs in `grids`, `mark_best` picking one. Returns
    (the `sweep_lr_grid` table; the full configs at the chosen LRs keyed by (*key, seed), none for
    a key whose probes all diverged or are not trained)."""
    points = {key: (dataclasses.replace(c, epochs=probe_epochs), grids[key]) for key, c in base.items()}
    table = sweep_lr_grid(points, ctx, name_of=name_of, train=train)
    best = {row.point: row.lr for row in table[table.best].itertuples()}
    return table, {(*key, s): dataclasses.replace(c, seed=s, lr=float(best[key])).resolved()
                   for key, c in base.items() if key in best for s in seeds}


def final_numbers(run) -> dict:
    """A run's final train/test accuracy and normalized losses (empty unless it finished)."""
    final = run.final() if run.finished else {}
    return {name: final.get(name) for name in ("train_acc", "test_acc", "train_loss_norm",
                                                 "test_loss_norm")}


def mark_best(table: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """`table` (one sweep: columns lr, state, test_acc) with a `best` column: True for the
    smallest LR whose final test accuracy is within `tolerance` of the highest among the runs
    that finished. Diverged runs never count; smaller LRs are the safer choice for the longer
    schedule that follows. No finished run: no best."""
    table = table.sort_values("lr").reset_index(drop=True)
    table["best"] = False
    finished = table[(table.state == "finished") & table.test_acc.notna()]
    if not finished.empty:
        good = finished[finished.test_acc >= finished.test_acc.max() - tolerance]
        table.loc[good.lr.idxmin(), "best"] = True
    return table

