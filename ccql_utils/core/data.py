"""CIFAR-100: locating or downloading it, class subsets, and what a data root holds.

Where the data comes from, in order:
1. `data_root` passed by the caller (`--data-root PATH` on the command line),
2. the environment variable `CCQL_DATA_ROOT`,
3. the default folder `<project>/data`, where torchvision downloads it if it is absent.
A root may be the folder that holds `cifar-100-python/` or that folder itself, or a pack (`packs`).
An existing copy is never overwritten; a copy is accepted when its decoded arrays match the
published content (`cifar100.CONTENT_SHA256`).
"""
from __future__ import annotations

import functools
import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .cifar100 import (COARSE_NAMES, DATA_ROOT_ENV, FINE_NAMES, FINE_TO_COARSE, FOLDER_NAME, HOW_TO_POINT,
                       IMAGES_PER_CLASS, Cifar100, DataError, first_per_class, read_folder, resolve_cap)
from .packs import MANIFEST, is_pack, load_packed
from ..provenance import PROJECT_ROOT

DEFAULT_DATA_ROOT = PROJECT_ROOT / "data"

# Per-channel statistics of the CIFAR-100 training images, in [0, 1] units.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

MAMMAL_SUPERCLASSES = ("aquatic_mammals", "small_mammals", "medium_mammals", "large_carnivores",
                       "large_omnivores_and_herbivores")
# The named class subsets and their K (None: the user chooses K).
SUBSET_SIZES = {"random": None, "all": len(FINE_NAMES),
                "mammals": sum(COARSE_NAMES[c] in MAMMAL_SUPERCLASSES for c in FINE_TO_COARSE)}
SUBSET_KINDS = tuple(SUBSET_SIZES)


def _as_cifar_folder(root: Path) -> Path | None:
    """`root/cifar-100-python` or `root` itself, whichever holds the three pickles."""
    for folder in (root / FOLDER_NAME, root):
        if all((folder / name).is_file() for name in ("train", "test", "meta")):
            return folder
    return None


def _explicit_root(data_root):
    """The root the caller or CCQL_DATA_ROOT names, or None (the default folder)."""
    return data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV) or None


def locate_cifar100(data_root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the `cifar-100-python` folder, downloading into the default folder if needed.
    An explicit root that holds no copy is an error: nothing is downloaded or overwritten there."""
    explicit = _explicit_root(data_root)
    if explicit is not None:
        root = Path(explicit).expanduser()
        folder = _as_cifar_folder(root)
        if folder is None:
            source = "--data-root" if data_root is not None else DATA_ROOT_ENV
            raise DataError(f"No CIFAR-100 copy at {root} (from {source}): expected "
                            f"{root / FOLDER_NAME}/train, test and meta. {HOW_TO_POINT}")
        return folder
    folder = _as_cifar_folder(DEFAULT_DATA_ROOT)
    if folder is not None:
        return folder
    if (DEFAULT_DATA_ROOT / FOLDER_NAME).exists():
        raise DataError(f"{DEFAULT_DATA_ROOT / FOLDER_NAME} exists but is incomplete (train, test "
                        f"and meta expected); it is not overwritten. Remove it to download "
                        f"again, or: {HOW_TO_POINT}")
    if not download:
        raise DataError(f"CIFAR-100 not found under {DEFAULT_DATA_ROOT}. {HOW_TO_POINT}")
    try:
        import torchvision
        DEFAULT_DATA_ROOT.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR100(str(DEFAULT_DATA_ROOT), train=True, download=True)
    except Exception as exc:  # offline machines fail here with URLError / OSError
        raise DataError(f"Could not download CIFAR-100 into {DEFAULT_DATA_ROOT} ({exc}). "
                        f"{HOW_TO_POINT}") from exc
    folder = _as_cifar_folder(DEFAULT_DATA_ROOT)
    if folder is None:
        raise DataError(f"The download into {DEFAULT_DATA_ROOT} did not produce {FOLDER_NAME}/. "
                        f"{HOW_TO_POINT}")
    return folder


def data_source(data_root: str | os.PathLike | None = None) -> Path:
    """What `load_cifar100(data_root)` reads: a pack or the located folder."""
    explicit = _explicit_root(data_root)
    if is_pack(explicit):
        return Path(explicit).expanduser()
    return locate_cifar100(data_root, download=False)


def load_cifar100(data_root: str | os.PathLike | None = None, verify: bool = True,
                  download: bool = True) -> Cifar100:
    """Locate (see module docstring), read and check CIFAR-100, in about half a second.
    verify=False checks structure only (synthetic stand-ins); a pack is verified by `load_packed`."""
    explicit = _explicit_root(data_root)
    if is_pack(explicit):
        return load_packed(explicit)
    return read_folder(locate_cifar100(data_root, download=download), verify)


# ----------------------------------------------------------------------------- class subsets
def random_classes(k: int, seed: int, num_classes: int = 100) -> list[int]:
    """k of range(num_classes) drawn uniformly without replacement, sorted ascending: the first k
    in the order of sha256("seed:class"), so every machine and numpy/torch/Python version agrees."""
    if int(k) != k or not 2 <= k <= num_classes:
        raise ValueError(f"a random subset needs 2 <= k <= {num_classes} classes, got {k}")
    keys = {c: hashlib.sha256(f"{int(seed)}:{c}".encode()).hexdigest() for c in range(num_classes)}
    return sorted(sorted(range(num_classes), key=keys.__getitem__)[:k])


def select_classes(kind: str | Sequence[str], data: Cifar100 | None, k: int | None = None,
                   seed: int = 0) -> list[int]:
    """Original fine-class indices (ascending) of a subset. kind: 'random' (k classes from seed),
    'all', 'mammals' (the fine classes of the five mammal superclasses, read off the coarse labels)
    or a list of fine class names. data: whose names and superclasses to read (None: the published)."""
    fine_names, coarse_names, fine_to_coarse = (
        (FINE_NAMES, COARSE_NAMES, np.asarray(FINE_TO_COARSE)) if data is None else
        (data.fine_names, data.coarse_names, data.fine_to_coarse))
    if isinstance(kind, str):
        if kind not in SUBSET_SIZES:
            raise ValueError(f"unknown class subset {kind!r}: choose one of {', '.join(SUBSET_KINDS)} "
                             f"or give a list of CIFAR-100 class names")
        if kind == "random":
            if k is None:
                raise ValueError("the 'random' class subset needs k (the number of classes)")
            return random_classes(k, seed, len(fine_names))
        if kind == "all":
            chosen = list(range(len(fine_names)))
        else:
            coarse = [coarse_names.index(name) for name in MAMMAL_SUPERCLASSES]
            chosen = sorted(np.flatnonzero(np.isin(fine_to_coarse, coarse)).tolist())
        if k not in (None, len(chosen)):
            raise ValueError(f"'{kind}' means K = {len(chosen)}, got k = {k}")
        return chosen
    names = check_class_names(kind, fine_names)
    if k not in (None, len(names)):
        raise ValueError(f"{len(names)} class names given but k = {k}")
    return sorted(fine_names.index(n) for n in names)


def resolve_classes(classes: str | Sequence[str], num_classes: int | None) -> tuple[str | list[str], int]:
    """(subset, K) with K filled in for 'all', 'mammals' and name lists; ValueError if inconsistent."""
    if isinstance(classes, str):
        if classes not in SUBSET_SIZES:
            raise ValueError(f"unknown class subset {classes!r}; choose one of "
                             f"{', '.join(SUBSET_KINDS)} or a list of class names")
        implied = SUBSET_SIZES[classes]
        if implied is not None and num_classes not in (None, implied):
            raise ValueError(f"classes={classes!r} has K = {implied}, got num_classes={num_classes}")
        k = implied or num_classes
        if k is None:
            raise ValueError("classes='random' needs num_classes (K)")
    else:
        classes = check_class_names([str(n) for n in classes])
        if num_classes not in (None, len(classes)):
            raise ValueError(f"{len(classes)} class names given but num_classes={num_classes}")
        k = len(classes)
    if isinstance(k, bool) or int(k) != k or not 2 <= k <= len(FINE_NAMES):
        raise ValueError(f"CIFAR-100 allows 2 <= K <= {len(FINE_NAMES)} classes, got {k}")
    return classes, int(k)


def check_class_names(names: Sequence[str], valid: Sequence[str] = FINE_NAMES) -> list[str]:
    """The names as a list if they are >= 2 distinct CIFAR-100 fine class names, else ValueError."""
    names = list(names)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown CIFAR-100 class names {unknown}; valid names are in "
                         f"ccql_utils.core.data.FINE_NAMES")
    if len(set(names)) != len(names) or len(names) < 2:
        raise ValueError(f"an explicit class list needs >= 2 distinct names, got {names}")
    return names


@dataclass(frozen=True)
class ClassificationSubset:
    """A K-class subset: images uint8 [N, 3, 32, 32], labels int64 [N] in 0..K-1."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_indices: tuple[int, ...]
    class_names: tuple[str, ...]


def make_subset(data: Cifar100, class_indices: Sequence[int], train_per_class: int | None = None,
                test_per_class: int | None = None) -> ClassificationSubset:
    """Keep the images of `class_indices` (original fine indices), labels remapped to 0..K-1 in
    ascending original index; at most the first `*_per_class` images of each class (None: all,
    the paper's protocol)."""
    classes = sorted(int(c) for c in class_indices)
    caps = {"train": resolve_cap("train", train_per_class), "test": resolve_cap("test", test_per_class)}
    remap = np.full(len(data.fine_names), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    arrays = []
    for split, cap in caps.items():
        fine = getattr(data, f"{split}_fine")
        keep = first_per_class(fine, dict.fromkeys(classes, cap))
        labels = remap[fine[keep]]
        counts = np.bincount(labels, minlength=len(classes))
        # Real CIFAR-100 (or a packed part of it) must give every class its full count: a packed
        # subset lacking classes or images would otherwise train on less than the config says.
        expected = cap or IMAGES_PER_CLASS[split] if data.verified else 1
        short = [data.fine_names[c] for c, n in zip(classes, counts) if n < expected]
        if short:
            raise DataError(f"{data.folder} has fewer than {expected} {split} images of class(es) "
                            f"{short[:5]}{' ...' if len(short) > 5 else ''}: pack a subset that "
                            f"holds these classes and images per class")
        arrays += [np.ascontiguousarray(getattr(data, f"{split}_images")[keep]), labels]
    return ClassificationSubset(*arrays, tuple(classes), tuple(data.fine_names[c] for c in classes))


def content_fingerprint(data_root: str | os.PathLike | None = None) -> str:
    """16 hex digits of sha256 over what `load_cifar100(data_root)` reads (a pack's bytes, or the
    folder's train, test and meta files): the identity of data that is not the real CIFAR-100,
    so runs on different stand-ins, or on a forged pack, never share a run id."""
    source = data_source(data_root)
    files = ([source / MANIFEST] if source.is_dir() and is_pack(source) else
             [source] if source.is_file() else [source / n for n in ("train", "test", "meta")])
    stats = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint(stats)


@functools.lru_cache(maxsize=16)
def _fingerprint(stats: tuple) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(2**22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- synthetic stand-in
def write_synthetic_cifar100(root: str | os.PathLike, train_per_class: int = 20,
                             test_per_class: int = 5, seed: int = 0) -> Path:
    """Write a small learnable stand-in (CIFAR-100's names and superclasses; each class a random
    low-frequency colour pattern plus pixel noise) in torchvision's layout under `root`. Load it
    with `load_cifar100(root, verify=False)`."""
    rng = np.random.default_rng(seed)
    fine_to_coarse = np.asarray(FINE_TO_COARSE, dtype=np.int64)
    low_res = rng.integers(30, 226, size=(100, 3, 4, 4)).astype(np.float64)
    templates = low_res.repeat(8, axis=2).repeat(8, axis=3)          # [100, 3, 32, 32]
    folder = Path(root) / FOLDER_NAME
    folder.mkdir(parents=True, exist_ok=True)
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        fine = np.repeat(np.arange(100), per_class)
        rng.shuffle(fine)
        noise = rng.normal(0, 40, size=(len(fine), 3, 32, 32))
        images = np.clip(templates[fine] + noise, 0, 255).astype(np.uint8)
        payload = {"data": images.reshape(len(fine), 3072), "fine_labels": fine.tolist(),
                   "coarse_labels": fine_to_coarse[fine].tolist(), "batch_label": split,
                   "filenames": [f"{split}_{i:05d}.png" for i in range(len(fine))]}
        with open(folder / split, "wb") as f:
            pickle.dump(payload, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(FINE_NAMES), "coarse_label_names": list(COARSE_NAMES)}, f)
    return folder
