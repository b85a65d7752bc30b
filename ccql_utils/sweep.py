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
from .context import RunContext
from .scheduler import obtain


def sweep_lr(config: TrainConfig, lrs: Sequence[float], ctx: RunContext,
             tolerance: float = 0.005) -> pd.DataFrame:
    """Train `config` once per LR in `lrs` (where and how: `ctx`, see scheduler.py); one row per
    LR, the best marked (`mark_best`). Columns: loss, lr, state, epochs, train_acc, test_acc,
    test_loss_norm, best, run_dir.
    """
    return sweep_lr_grid({config.loss: (config, lrs)}, ctx, tolerance).drop(columns="point")


def sweep_lr_grid(points: dict, ctx: RunContext, tolerance: float = 0.005, name_of=str) -> pd.DataFrame:
    """Several sweeps obtained at once: `points` maps a key to (config, LRs).

    One row per (point, LR), columns as `sweep_lr`'s plus `point` (the key); the best marked per
    point. name_of(key) names a point in progress lines.
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
    runs = obtain(ctx, configs, "sweep-lr", lambda key: f"{name_of(key[0])} lr {key[1]}")
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


def probe_then_train(ctx: RunContext, base: dict, grids: dict, probe_epochs: int, seeds,
                     name_of=str, name: str = ""):
    """What the sweep notebooks (04, 05) do at every point of their grid: probe, then train.

    base: key -> config (any LR); grids: key -> LRs. Every key is first trained for
    `probe_epochs` at each of its LRs (all probes obtained at once), `mark_best`
    picks the LR, then the full config trains at that LR once per seed (all at once). A key whose
    probes all diverged trains nothing. Returns (the probe table, one row per (key, LR) with the
    key in `point`; configs and runs, both keyed by (*key, seed)).
    """
    points = {key: (dataclasses.replace(c, epochs=probe_epochs), grids[key]) for key, c in base.items()}
    table = sweep_lr_grid(points, ctx, name_of=name_of)
    best = {row.point: row.lr for row in table[table.best].itertuples()}
    configs = {(*key, s): dataclasses.replace(c, seed=s, lr=float(best[key])).resolved()
               for key, c in base.items() if key in best for s in seeds}
    runs = obtain(ctx, configs, name, lambda key: f"{name_of(key[:-1])} seed {key[-1]}")
    return table, configs, runs


def final_numbers(run) -> dict:
    """A run's final train/test accuracy and normalized losses (empty unless it finished)."""
    final = run.final() if run.finished else {}
    return {name: final.get(name) for name in ("train_acc", "test_acc", "train_loss_norm",
                                                 "test_loss_norm")}


def sweep_notebook_values(parameters: dict, defaults: dict, sizes: dict, what: str, check) -> dict:
    """A sweep notebook's parameters (04, 05) with None replaced by `defaults`; ValueError for an
    unknown name, a preset missing from `sizes` (its per-preset table), bad seeds, or whatever
    check(preset, values) refuses; all before anything runs."""
    from .presets import resolve_preset, seed_list
    unknown = sorted(set(parameters) - set(defaults))
    if unknown:
        raise ValueError(f"unknown notebook parameter(s) {unknown}; valid: {', '.join(defaults)}")
    p = {k: defaults[k] if parameters.get(k) is None else parameters[k] for k in defaults}
    preset = resolve_preset(p["preset"], p["device"])
    if preset not in sizes:
        raise ValueError(f"the {what} has no preset {preset!r}; choose one of {', '.join(sizes)}")
    seed_list(p["seeds"], p["seed"])
    check(preset, p)
    return p


def save_sweep_figure(fig, name: str, result, figures_dir=None, extra: dict | None = None) -> dict:
    """PNG + PDF + result.final_table() as CSV + provenance, as <name>_<preset>; the LR probe's
    table beside it as <name>_<preset>_lr_probe.csv. A tiny-preset result with no folder given
    goes to outputs/tiny/figures, never beside the committed figures."""
    from .provenance import PROJECT_ROOT, atomic_write_text, save_figure
    name = f"{name}_{result.preset}"
    figures_dir = figures_dir or result.figures_dir or (
        PROJECT_ROOT / "outputs" / "tiny" / "figures" if result.preset == "tiny" else None)
    paths = save_figure(fig, name, data=result.final_table(), params={**result.provenance(), **(extra or {})},
                        figures_dir=figures_dir, caption=result.caption())
    paths["lr_probe"] = paths["csv"].with_name(f"{name}_lr_probe.csv")
    atomic_write_text(paths["lr_probe"], result.lr_table.drop(columns="run_dir").to_csv(index=False))
    return paths


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
