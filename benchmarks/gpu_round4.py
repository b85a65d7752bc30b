"""Speed round 4 on one GPU: a real sweep of small runs, stacked (ccql_utils/stacked.py) vs alone.

  python benchmarks/gpu_round4.py --data-root .carry/k25q.npz [--seeds 10] [--dry-run]

Fig 1's runs at the `quick` preset (WRN-10-1, K = 25 random classes, 200 train and 100 test
images per class, 50 epochs, the preset's LRs) through the run store, as `run_all.sh` trains them:
  alone    CE seed 0 with runs_per_gpu=1 (one run, the pre-stacking way)
  stacked  CE, QL and CCQL for seeds 0..S-1 (3S runs, one stack when 3S <= 32), runs_per_gpu=None
           (the default: stacks of up to 32 small runs on a GPU)
Per part: wall time, the median epoch (its `seconds` column, train + test pass, from epoch 2 on)
and images/s over all runs (training + test images per epoch); the speed-up is
runs x alone's epoch / the stack's epoch. The runs' records (config, metrics, status) go to
$OUT/gpu_round4_records.tar.gz: they are a 3S-seed Fig 1 at `quick`, trained on the GPU.
Writes $OUT/gpu_round4.json after each part. --dry-run: CPU, 2 seeds, 2 epochs, 20 train images per class.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ccql_utils.executor import run_configs  # noqa: E402
from ccql_utils.presets import experiment_seed_configs  # noqa: E402
from ccql_utils.runs import RunStore, export_records  # noqa: E402


def part(store, configs: dict, runs_per_gpu) -> dict:
    start = time.perf_counter()
    runs = run_configs(store, configs, runs_per_gpu=runs_per_gpu, name="round4")
    wall = time.perf_counter() - start
    first, c = next(iter(runs.values())), next(iter(configs.values()))
    epoch = float(first.history.seconds.iloc[1:].median())  # every run of a stack has the same
    images = c.num_classes * (c.train_per_class + (c.test_per_class or 100))
    finals = {label: {"state": r.state, "test_acc": r.final().get("test_acc"),
                      "stacked_runs": r.status.get("stacked_runs", 1)} for label, r in runs.items()}
    return {"runs": len(runs), "wall_s": wall, "epoch_s": epoch, "images_per_s": len(runs) * images / epoch,
            "finals": finals, "run_dirs": [str(r.run_dir) for r in runs.values()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args(argv)
    out = Path(os.environ.get("OUT", "benchmarks/results"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = dict(epochs=2, train_per_class=20, device="cpu") if args.dry_run else {}
    seeds = list(range(2 if args.dry_run else args.seeds))
    configs = {f"{label} seed {s}": c for (label, s), c in
               experiment_seed_configs("k25_random", "quick", seeds=seeds, **sizes).items()}
    record = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() and not args.dry_run
              else "cpu", "torch": torch.__version__, "dry_run": args.dry_run,
              "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory() as runs_dir:
        store = RunStore(Path(runs_dir) / "alone", data_root=args.data_root, progress="lines")
        record["alone"] = part(store, {"CE seed 0": configs["CE seed 0"]}, 1)
        (out / "gpu_round4.json").write_text(json.dumps(record, indent=1))
        store = RunStore(Path(runs_dir) / "stacked", data_root=args.data_root, progress="lines")
        # the default (None) stacks only on a GPU; the CPU dry run asks for the stack explicitly
        record["stacked"] = part(store, configs, len(configs) if args.dry_run else None)
        record["speedup"] = record["stacked"]["images_per_s"] / record["alone"]["images_per_s"]
        (out / "gpu_round4.json").write_text(json.dumps(record, indent=1))
        export_records(record["stacked"]["run_dirs"], out / "gpu_round4_records.tar.gz")
    for name in ("alone", "stacked"):
        print(name, {k: v for k, v in record[name].items() if k not in ("finals", "run_dirs")})
    print("speed-up", record["speedup"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
