"""The data path of N stacked runs: N loaders and a concatenation per step (as stacked.py did until
2026-11-28) vs one StackedLoader gather for all N. Prints ms per stacked step and the ratio.

  PYTHONPATH=. python benchmarks/stacked_data.py [--device cuda] [--runs 1,8,32] [--batch 128]

Each run holds 5,000 random images (quick at K = 25: 200 per class); the batches are identical
(tests/test_data.py), so only the time differs. A training epoch of N stacked WRN-10-1 pays this
once per step beside the stacked model's forward and backward.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ccql_utils.loader import DeviceLoader, StackedLoader  # noqa: E402


def per_run_batches(loaders, epoch, batch_size):
    """The old path: each run's loader, then one concatenation along channels."""
    for batches in zip(*(loader.train_batches(epoch, batch_size) for loader in loaders)):
        yield torch.cat([b[0] for b in batches], 1), torch.stack([b[1] for b in batches], 1)


def ms_per_step(batches, device, steps: int) -> float:
    """Median over 3 blocks of `steps` steps (after 2 warm-up steps), ms per step."""
    blocks = []
    for _ in range(3):
        iterator = batches()
        for _ in range(2):
            next(iterator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            next(iterator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        blocks.append((time.perf_counter() - start) / steps * 1e3)
    return sorted(blocks)[1]


def compare(runs: int, batch_size: int, device, steps: int = 20, images: int = 5000) -> dict:
    """Both paths over the same `runs` loaders of `images` random images each (one epoch must
    hold the 2 warm-up and `steps` timed batches)."""
    if images < (steps + 2) * batch_size:
        raise ValueError(f"{images} images hold fewer than the {steps + 2} batches of {batch_size} timed")
    rng = np.random.default_rng(0)
    loaders = [DeviceLoader(rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8),
                            rng.integers(0, 25, images), device, seed=seed,
                            channels_last=device.type == "cuda") for seed in range(runs)]
    stacked = StackedLoader(loaders)
    old = ms_per_step(lambda: per_run_batches(loaders, 0, batch_size), device, steps)
    new = ms_per_step(lambda: stacked.train_batches(0, batch_size), device, steps)
    return {"runs": runs, "batch": batch_size, "per_run_loaders_ms": old, "stacked_loader_ms": new,
            "speedup": old / new}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default="1,8,32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, batch {args.batch}")
    print(f"{'runs':>5} {'per-run loaders ms':>19} {'StackedLoader ms':>17} {'speed-up':>9}")
    for runs in map(int, args.runs.split(",")):
        row = compare(runs, args.batch, device, args.steps)
        print(f"{runs:>5} {row['per_run_loaders_ms']:>19.2f} {row['stacked_loader_ms']:>17.2f} "
              f"{row['speedup']:>8.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
