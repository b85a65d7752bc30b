"""The queue of paper-scale GPU runs still wanted, the plan that fits one lease, and the lease
(docs/gpu.md). Every run must finish inside one command of a lease (its checkpoint cannot come
back), so `plan` takes only runs whose estimate fits, and `lease` exports the records of every
finished run after each, so that a command cut short still returns what finished.
"""
from __future__ import annotations

import sys
import tarfile
import time
from dataclasses import dataclass, replace
from itertools import accumulate
from pathlib import Path

from ..core.config import TrainConfig
from ..core.data import FINE_NAMES, select_classes
from ..core.estimates import estimate_seconds
from ..core.packs import is_pack, pack_contents
from ..figures.presets import experiment_configs
from ..provenance import PROJECT_ROOT

RESULTS_DIR = PROJECT_ROOT / "results"


@dataclass(frozen=True)
class Wanted:
    """One run the paper-scale figures need: its place in the queue, why, a label, its config."""

    priority: int
    why: str
    label: str
    config: TrainConfig

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    def row(self) -> str:
        return f"  {self.priority}. {self.why:<42} {self.label:<26}"


def _queue() -> list[Wanted]:
    """The runs in order of value (docs/gpu.md, section 2, says why each)."""
    def runs(priority, why, experiment, preset, labels, suffix="", **kwargs):
        configs = experiment_configs(experiment, preset, **kwargs)
        return [Wanted(priority, why, label + suffix, configs[label]) for label in labels]
    return [*runs(1, "Fig 2 at gpu-short", "k100", "gpu-short", ("QL", "CE", "CCQL")),
            *runs(2, "Fig 1 at paper (200 epochs)", "k25_random", "paper", ("QL", "CCQL", "CE")),
            *runs(3, "control: mammals with CE, CCQL (gpu-short)", "mammals_vs_random", "gpu-short",
                  ("CE, mammals", "CCQL, mammals")),
            *(Wanted(4, "Fig 1, Fig 3 at gpu-short: seeds 1, 2", f"{label} (seed {seed})", config)
              for seed in (1, 2) for name in ("k25_random", "mammals_vs_random")
              for label, config in experiment_configs(name, "gpu-short", seed, class_seed=0).items()
              if not label.endswith(", random")),  # Fig 3's random-class runs are Fig 1's
            *runs(4, "Fig 1 at gpu-short: a second class draw", "k25_random", "gpu-short",
                  ("CE", "QL", "CCQL"), " (class seed 1)", class_seed=1),
            *(Wanted(5, "Fig 2 at gpu-short: QL at 0.5x, 2x its LR", f"QL lr {lr}",
                     experiment_configs("k100", "gpu-short", lr={"ql": lr})["QL"]) for lr in (0.005, 0.02))]


QUEUE = _queue()


def committed_run_ids(results_dir: str | Path = RESULTS_DIR) -> set[str]:
    """Run ids with records under `results_dir`: run folders (a status.json) and the members of
    exported archives (*.tar.gz)."""
    results_dir = Path(results_dir)
    ids = {p.parent.name for p in results_dir.rglob("status.json")}
    for archive in results_dir.rglob("*.tar.gz"):
        try:
            with tarfile.open(archive) as tar:
                ids |= {Path(n).parts[0] for n in tar.getnames() if Path(n).name == "status.json"}
        except (OSError, tarfile.TarError) as exc:
            print(f"warning: {archive} is unreadable ({exc}); its runs count as not committed", file=sys.stderr)
    return ids


def data_serves(data_root, config: TrainConfig) -> bool:
    """Whether the data at `data_root` holds the classes and images per class `config` needs (a
    pack holds a subset; any other data root is taken to be the full data set)."""
    if not is_pack(data_root):
        return True
    held = pack_contents(data_root)
    c = config.resolved()
    needed = {FINE_NAMES[i] for i in select_classes(c.classes, None, c.num_classes, c.class_seed)}
    enough = all(have is None or (want is not None and want <= have) for have, want in
                 ((held["train_per_class"], c.train_per_class), (held["test_per_class"], c.test_per_class)))
    return needed <= set(held["classes"]) and enough


@dataclass
class Plan:
    """The runs a lease trains (in order), the queue still waiting after it, and the budget."""

    budget_s: float
    runs: list[Wanted]
    waiting: list[Wanted]
    unserved: list[Wanted]
    seconds: dict

    def describe(self) -> str:
        secs = self.seconds
        until = accumulate(secs[w.run_id] for w in self.runs)
        unserved = ", ".join(f"{w.label} [{w.why}]" for w in self.unserved)
        return "\n".join([
            f"plan for a budget of {self.budget_s:.0f} s (estimates: estimates.H200_WRN28_10): "
            f"{len(self.runs)} run(s), about {self.total_s:.0f} s",
            *(f"{w.row()} {w.run_id}  ~{secs[w.run_id]:.0f} s (until {t:.0f} s)"
              for w, t in zip(self.runs, until)),
            f"still in the queue after it: {len(self.waiting)} run(s), about "
            f"{sum(secs[w.run_id] for w in self.waiting) / 60:.0f} min",
            *(f"{w.row()} ~{secs[w.run_id]:.0f} s" for w in self.waiting),
            *([f"not served by this data (pack their classes): {unserved}"] if unserved else [])])

    @property
    def total_s(self) -> float:
        return sum(self.seconds[w.run_id] for w in self.runs)


def plan(budget_s: float, store=None, data_root=None, results_dir: str | Path = RESULTS_DIR,
         overrides: dict | None = None) -> Plan:
    """The next runs of the queue that fit `budget_s`, greedy in queue order (a run that does not
    fit is passed over for later, shorter ones). Left out: runs committed under `results_dir` or
    final in `store` (a RunStore, which also says how the data identifies runs), and runs the pack
    at `data_root` cannot serve (`Plan.unserved`).
    overrides (tests' dry runs): changes to every config, the estimates staying the real ones."""
    if not budget_s > 0:
        raise ValueError(f"the budget must be a positive number of seconds, got {budget_s}")
    seconds, todo, unserved = {}, [], []
    done = committed_run_ids(results_dir)
    for w in QUEUE:
        estimate = estimate_seconds(w.config)
        if overrides:
            w = replace(w, config=replace(w.config, **overrides).resolved())
        run_id = store.resolve(w.config).run_id() if store is not None else w.run_id
        if run_id in done or (store is not None and store.load(w.config).state in ("finished", "diverged")):
            continue
        seconds[w.run_id] = estimate
        (todo if data_serves(data_root, w.config) else unserved).append(w)
    chosen, used = [], 0.0
    for w in todo:
        if used + seconds[w.run_id] <= budget_s:
            chosen.append(w)
            used += seconds[w.run_id]
    return Plan(budget_s, chosen, [w for w in todo if w not in chosen], unserved, seconds)


def lease(ctx, budget_s: float, output: str | Path, device: str = "cuda",
          overrides: dict | None = None) -> int:
    """Train `plan(budget_s)` of `ctx.store` one run after another on `device`, exporting the records
    of every finished or diverged run of this lease to `output`/records.tar.gz after each
    (atomically), passing over a run that no longer fits the time left. Exit code: 0, or 3 if a
    run diverged."""
    from ..execution.records import export_records
    from ..execution.scheduler import obtain
    start = time.monotonic()
    the_plan = plan(budget_s, ctx.store, ctx.store.data_root, overrides=overrides)
    print(the_plan.describe(), flush=True)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    finished, diverged = [], []
    for n, w in enumerate(the_plan.runs, 1):
        left = budget_s - (time.monotonic() - start)
        if the_plan.seconds[w.run_id] > left:
            print(f"[lease] passing over {w.label} ({w.why}): ~{the_plan.seconds[w.run_id]:.0f} s "
                  f"needed, {left:.0f} s left", flush=True)
            continue
        print(f"[lease] {time.strftime('%H:%M:%S')} run {n}/{len(the_plan.runs)}: {w.label} ({w.why})",
              flush=True)
        run = obtain(ctx, {w.label: replace(w.config, device=device)}, "lease")[w.label]
        (diverged if run.diverged else finished).append(run.run_dir)
        export_records(finished + diverged, output / "records.tar.gz")
        print(f"[lease] {w.label}: {run.describe()} after {len(run.history)} epochs; "
              f"{len(finished) + len(diverged)} record(s) in {output / 'records.tar.gz'}", flush=True)
    print(f"[lease] done in {time.monotonic() - start:.0f} s: {len(finished)} finished, "
          f"{len(diverged)} diverged", flush=True)
    return 3 if diverged else 0
