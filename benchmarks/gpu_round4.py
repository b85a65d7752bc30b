"""Speed round 4 on one GPU: what issue 12 still lacks, most valuable first, within one job.

  PYTHONPATH=. python3 benchmarks/gpu_round4.py --data-root .carry/k25.npz [--commit SHA] [--budget-s 540] [--dry-run]

.carry/k25.npz: `python -m ccql_utils pack --classes random --k 25 --output .carry/k25.npz` (44 MiB;
the K = 25 random classes of seed 0, all images: `quick` takes the first 200 per class of them).
Parts (record.py: each skipped if the budget left is short, a failure recorded, the record
rewritten to $OUT/gpu_round4.{json,md} after each):
  sweep     Fig 1 at `quick` through the run store as run_all.sh trains it: CE seed 0 alone
            (runs_per_gpu=1), then CE, QL, CCQL x seeds 0..S-1 (3S runs) stacked by default
            (runs_per_gpu=None); median epoch (train + test pass, from epoch 2), images/s over all
            runs, speed-up = runs x alone's epoch / the stack's epoch. The stacked runs' records
            go to $OUT/gpu_round4_records.tar.gz: a 3S-seed Fig 1 at `quick`, trained on the GPU.
  stacked   bare loops: WRN-16-2 stacked N = 1, 32, 64 (eager); WRN-10-1 N = 1, 32 with CUDA graphs.
  epochs    real WRN-28-10 epochs at `paper` (K = 25, CE) through the Trainer, one row per compile
            variant: default (dynamic shapes after the last batch), default with dynamic=False,
            reduce-overhead (CUDA graphs) with dynamic=False, eager. The first epoch includes compiling.
  overhead  the trainer's compiled epoch vs a bare loop of the same steps (bench.overhead).
  data      the data path alone, ours vs a DataLoader baseline (bench.data_path).
  (stacked) data: the data path of 32 stacked runs: per-run loaders vs one StackedLoader (stacked_data.py).
--dry-run: CPU, at most 2 seeds, 2 epochs, toy sizes, compiled rows through dynamo's eager backend.
"""
from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import bench  # noqa: E402
import gpu_round3  # noqa: E402
import stacked_data  # noqa: E402
from record import job_arguments, job_record, markdown  # noqa: E402
from ccql_utils import train  # noqa: E402
from ccql_utils.context import RunContext  # noqa: E402
from ccql_utils.data import load_cifar100, make_subset, select_classes  # noqa: E402
from ccql_utils.presets import experiment_configs  # noqa: E402
from ccql_utils.records import export_records  # noqa: E402
from ccql_utils.scheduler import obtain  # noqa: E402

# (row name, TrainConfig.compile, train.COMPILE_DYNAMIC)
EPOCH_VARIANTS = (("compile default", True, None), ("compile default, dynamic=False", True, False),
                  ("CUDA graphs (reduce-overhead), dynamic=False", "reduce-overhead", False),
                  ("eager", False, None))


def sweep_part(ctx: RunContext, configs: dict, name: str, kept: dict) -> dict:
    """One sweep through `ctx`'s store; kept[name]: the run folders."""
    start = time.perf_counter()
    runs = obtain(ctx, configs, f"round4 {name}")
    wall = time.perf_counter() - start
    first, c = next(iter(runs.values())), next(iter(configs.values()))
    epoch = float(first.history.seconds.iloc[1:].median())  # every run of a stack has the same
    images = c.num_classes * (c.train_per_class + (c.test_per_class or 100))
    finals = [{"part": name, "run": label, "state": r.state, "test_acc": r.final().get("test_acc"),
               "stacked_runs": r.status.get("stacked_runs", 1)} for label, r in runs.items()]
    kept[name] = [r.run_dir for r in runs.values()]
    return {"sweep": {"part": name, "runs": len(runs), "wall_s": wall, "epoch_s": epoch,
                      "images_per_s": len(runs) * images / epoch}, "sweep_runs": finals}


def epochs_part(data, config, variant: tuple, epochs: int) -> dict:
    name, compile, dynamic = variant
    torch._dynamo.reset()
    kept, train.COMPILE_DYNAMIC = train.COMPILE_DYNAMIC, dynamic
    try:
        rows = bench.real_epochs(data, dataclasses.replace(config, compile=compile), epochs)["epochs"]
    finally:
        train.COMPILE_DYNAMIC = kept
    return {"epochs": [{"variant": name, **r, "epoch_s": r["train_s"] + r["eval_s"]} for r in rows]}


def main(argv=None) -> int:
    ap = job_arguments(__doc__.splitlines()[0], 540, "sweep,stacked,epochs,overhead,data")
    ap.add_argument("--seeds", type=int, default=10)
    args = ap.parse_args(argv)
    dry = args.dry_run
    device, rec = job_record("gpu_round4", args)
    tables = rec.data["tables"]

    sizes = dict(epochs=2, train_per_class=20, device="cpu") if dry else {}
    seeds = list(range(min(args.seeds, 2) if dry else args.seeds))
    configs = {f"{label} seed {s}": c for s in seeds  # one class draw for every seed
               for label, c in experiment_configs("k25_random", "quick", s, class_seed=0, **sizes).items()}
    with tempfile.TemporaryDirectory() as runs_dir:
        kept = {}

        def context(name, runs_per_gpu):
            return RunContext.of(runs_dir=Path(runs_dir) / name, data_root=args.data_root, progress="lines",
                                 verify_data=not args.unverified_data, runs_per_gpu=runs_per_gpu)
        rec.part("sweep alone", lambda: sweep_part(context("alone", 1), {"CE seed 0": configs["CE seed 0"]},
                                                   "alone", kept), need_s=40)
        # the default (None) stacks only on a GPU; the dry run asks for the stack explicitly
        rec.part("sweep stacked", lambda: sweep_part(context("stacked", len(configs) if dry else None), configs,
                                                     "stacked", kept), need_s=90)
        rows = {r["part"]: r for r in tables.get("sweep", [])}
        if {"alone", "stacked"} <= set(rows):
            rows["stacked"]["speedup_vs_alone"] = rows["stacked"]["images_per_s"] / rows["alone"]["images_per_s"]
            rec.write()
        if "stacked" in kept:
            export_records(kept["stacked"], rec.out_dir / "gpu_round4_records.tar.gz")

    steps = 2 if dry else 20
    rec.part("stacked WRN-16-2", lambda: {"stacked": gpu_round3.stacked(
        16, 2, (1, 2) if dry else (1, 32, 64), 16 if dry else 128, steps, device)}, need_s=40)
    rec.part("stacked WRN-10-1 CUDA graphs", lambda: {"stacked": gpu_round3.stacked(
        10, 1, (1, 2) if dry else (1, 32), 16 if dry else 128, steps, device,
        compile=None if dry else "reduce-overhead")}, need_s=60)

    data = load_cifar100(args.data_root, download=False)
    protocol = "tiny" if dry else "paper"
    epoch_config = bench.run_config(protocol, "ce", device=str(device), **({"train_per_class": 20} if dry else {}))
    for variant in EPOCH_VARIANTS:
        rec.part(f"epochs {variant[0]}", lambda v=variant: epochs_part(data, epoch_config, v, 2 if dry else 4),
                 need_s=20 if variant[0] == "eager" else 75)
    for compile in (True, "reduce-overhead"):
        rec.part(f"overhead compile={compile}", lambda c=compile: {"overhead": {
            "compile_mode": str(c), **bench.overhead(bench.make_trainer(
                data, bench.run_config(protocol, "ce", device=str(device), compile=c)), steps, 3)}}, need_s=60)
    subset = make_subset(data, select_classes(epoch_config.classes, data, 25, epoch_config.class_seed))
    rec.part("data", lambda: {"data": bench.data_path(subset, device, 128, 1 if dry else 8, 3)}, need_s=30)
    rec.part("stacked data", lambda: {"stacked_data": [stacked_data.compare(
        n, 16 if dry else 128, device, steps, 200 if dry else 5000) for n in ((1, 2) if dry else (1, 32))]},
        need_s=20)
    rec.write()
    print(markdown(rec.data))
    return 1 if rec.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
