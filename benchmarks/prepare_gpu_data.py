#!/usr/bin/env python3
"""Pack the K = 25 random CIFAR-100 subset (seed 0) as raw uint8 arrays for the GPU machine.

The GPU machine has no internet and no copy of CIFAR-100; what it needs travels with the
working tree in the git-ignored folder `.carry/` (64 MiB in all). This writes

    .carry/cifar100_k25_seed0.npz   (uncompressed, ~46 MB)

holding, for the 25 classes `select_classes('random', data, 25, 0)` picks, every train and
test image (uint8 [N, 3, 32, 32], in CIFAR-100's original order) with their original fine and
coarse labels, the class indices and names, and sha256 checksums of the arrays. `load_npz`
rebuilds a `ccql_utils.data.Cifar100` from it (the 100 class names, only these 25 classes'
images), so `Trainer`/`get_run` with `classes='random', num_classes=25, class_seed=0` pick
exactly the same subset as on the full data set.

The torchvision baseline of the benchmark reads the same arrays through a thin subclass of
`torchvision.datasets.CIFAR100` (benchmarks/bench.py), so no second copy in pickle form is
needed (that would double the carried bytes, past the 64 MiB limit).

Usage (here, where the real data is):
    python benchmarks/prepare_gpu_data.py --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from ccql_utils.data import (COARSE_NAMES, FINE_NAMES, Cifar100, load_cifar100,  # noqa: E402
                             select_classes)

DEFAULT_K = 25
DEFAULT_SEED = 0
DEFAULT_PATH = REPO_ROOT / ".carry" / f"cifar100_k{DEFAULT_K}_seed{DEFAULT_SEED}.npz"
ARRAYS = ("train_images", "train_fine", "train_coarse", "test_images", "test_fine", "test_coarse")


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def subset_arrays(data: Cifar100, k: int = DEFAULT_K, seed: int = DEFAULT_SEED) -> dict:
    """The images and original labels of the K random classes (seed), in original order."""
    classes = select_classes("random", data, k, seed)
    out = {"class_indices": np.asarray(classes, dtype=np.int64)}
    for split in ("train", "test"):
        fine = getattr(data, f"{split}_fine")
        keep = np.isin(fine, classes)
        out[f"{split}_images"] = np.ascontiguousarray(getattr(data, f"{split}_images")[keep])
        out[f"{split}_fine"] = fine[keep].astype(np.int64)
        out[f"{split}_coarse"] = getattr(data, f"{split}_coarse")[keep].astype(np.int64)
    return out


def save_npz(data: Cifar100, path: str | os.PathLike = DEFAULT_PATH, k: int = DEFAULT_K,
             seed: int = DEFAULT_SEED) -> Path:
    """Write the subset as an uncompressed npz (atomically); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = subset_arrays(data, k, seed)
    meta = {"k": k, "seed": seed, "verified": bool(data.verified), "source": str(data.folder),
            "class_names": [data.fine_names[c] for c in arrays["class_indices"]],
            "sha256": {name: _sha256(arrays[name]) for name in ARRAYS}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)
    return path


def load_npz(path: str | os.PathLike = DEFAULT_PATH, check: bool = True) -> Cifar100:
    """A `Cifar100` holding only the packed classes' images (all 100 class names).

    check=True recomputes the arrays' sha256 and raises ValueError on any mismatch (a
    truncated or altered transfer). `verified` is carried over from the packing machine,
    where the full data set passed `load_cifar100`'s content check.
    """
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {name: z[name] for name in ARRAYS}
    if check:
        bad = [n for n in ARRAYS if _sha256(arrays[n]) != meta["sha256"][n]]
        if bad:
            raise ValueError(f"{path}: arrays {bad} do not match their recorded sha256; "
                             f"the file is truncated or altered. Re-run prepare_gpu_data.py.")
    return Cifar100(arrays["train_images"], arrays["train_fine"], arrays["train_coarse"],
                    arrays["test_images"], arrays["test_fine"], arrays["test_coarse"],
                    fine_names=tuple(FINE_NAMES), coarse_names=tuple(COARSE_NAMES),
                    folder=str(path), verified=bool(meta["verified"]))


def npz_meta(path: str | os.PathLike) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None,
                        help="CIFAR-100 location (default: CCQL_DATA_ROOT, then ./data)")
    parser.add_argument("--k", type=int, default=DEFAULT_K)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", default=None, help=f"npz path (default {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else REPO_ROOT / ".carry" / f"cifar100_k{args.k}_seed{args.seed}.npz"
    data = load_cifar100(args.data_root, download=False)
    path = save_npz(data, out, args.k, args.seed)
    meta = npz_meta(path)
    size = path.stat().st_size
    print(f"wrote {path} ({size / 2**20:.1f} MiB): K = {meta['k']} classes (seed {meta['seed']}): "
          f"{', '.join(meta['class_names'])}")
    if size > 50 * 2**20:
        print("warning: more than 50 MiB; the device tool carries at most 64 MiB in all",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
