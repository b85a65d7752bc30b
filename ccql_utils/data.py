"""CIFAR-100: locating or downloading it, checking its content, class subsets, packed subsets.

Where the data comes from, in order:
1. `data_root` passed by the caller (`--data-root PATH` on the command line),
2. the environment variable `CCQL_DATA_ROOT`,
3. the default folder `<project>/data`, where torchvision downloads it if it is absent.
A root may be the folder that holds `cifar-100-python/` or that folder itself. An existing copy
is never overwritten; a copy is accepted when its decoded arrays match the published content
(checksums below, the same for a torchvision download and for repacked copies).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .provenance import PROJECT_ROOT, atomic_write_bytes

DATA_ROOT_ENV = "CCQL_DATA_ROOT"
DEFAULT_DATA_ROOT = PROJECT_ROOT / "data"
FOLDER_NAME = "cifar-100-python"

# sha256 of the decoded arrays of the published CIFAR-100 (data as uint8 [N, 3072], labels as uint8);
# the same for a torchvision download and for repacked copies, since only the decoded content counts.
CONTENT_SHA256 = {
    "train": {"data": "de64658905c6b161606e3649ddafce7cf86c7634a0cf9116d518e64ef46a33c5",
              "fine_labels": "9f11b9f97aad759ba6df0a33e3218b01d8deaf4ed3a14aa1185d69b9ad7ebcb3",
              "coarse_labels": "1804078d4e89b6b90bd5da6ffead1404596f6eecba15ceb8d95b6a09dfbba4c0"},
    "test": {"data": "83c56492b2c11211ad1bb2dbd4f2eef4170a0441e41a41f3039c3144b1f5a511",
             "fine_labels": "4dad7d09c7c97d33f6cb928d705cf4196221316fd6e31bdd978a08ed9103ee0b",
             "coarse_labels": "48df17fb3bf299f43dd7e131db11ca0ea8b07d750be8b6dcf7ad6ff1b4cc721d"},
}
SPLIT_SIZES = {"train": 50_000, "test": 10_000}

# Per-channel statistics of the CIFAR-100 training images, in [0, 1] units.
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

# The published CIFAR-100 class names (meta) and the standard fine -> coarse map.
FINE_NAMES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle',
    'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle',
    'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch',
    'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant', 'flatfish', 'forest', 'fox',
    'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom',
    'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',
    'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road',
    'rocket', 'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake',
    'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank',
    'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle',
    'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm',
)
COARSE_NAMES = (
    'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables',
    'household_electrical_devices', 'household_furniture', 'insects', 'large_carnivores',
    'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
    'large_omnivores_and_herbivores', 'medium_mammals', 'non-insect_invertebrates', 'people',
    'reptiles', 'small_mammals', 'trees', 'vehicles_1', 'vehicles_2',
)
FINE_TO_COARSE = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11, 6, 11, 5, 10, 7, 6, 13,
    15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5, 5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4,
    17, 4, 2, 0, 17, 4, 18, 17, 10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13,
    15, 13, 16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)

MAMMAL_SUPERCLASSES = ("aquatic_mammals", "small_mammals", "medium_mammals", "large_carnivores",
                       "large_omnivores_and_herbivores")
# The named class subsets and their K (None: the user chooses K).
SUBSET_SIZES = {"random": None, "all": len(FINE_NAMES),
                "mammals": sum(COARSE_NAMES[c] in MAMMAL_SUPERCLASSES for c in FINE_TO_COARSE)}
SUBSET_KINDS = tuple(SUBSET_SIZES)
IMAGES_PER_CLASS = {"train": 500, "test": 100}   # in every CIFAR-100 class


class DataError(RuntimeError):
    """CIFAR-100 is missing, truncated or not the published content."""


def _how_to_point() -> str:
    return (f"Point the project at a copy in torchvision's layout ({FOLDER_NAME}/ with train, "
            f"test, meta) with --data-root PATH or the environment variable {DATA_ROOT_ENV}=PATH.")


def _as_cifar_folder(root: Path) -> Path | None:
    """`root/cifar-100-python` or `root` itself, whichever holds the three pickles."""
    for folder in (root / FOLDER_NAME, root):
        if all((folder / name).is_file() for name in ("train", "test", "meta")):
            return folder
    return None


def locate_cifar100(data_root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return the `cifar-100-python` folder, downloading into the default folder if needed.

    An explicit root (argument or CCQL_DATA_ROOT) that holds no copy is an error: the user
    asked for that copy, and nothing is downloaded or overwritten there.
    """
    explicit = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV) or None
    if explicit is not None:
        root = Path(explicit).expanduser()
        folder = _as_cifar_folder(root)
        if folder is None:
            source = "--data-root" if data_root is not None else DATA_ROOT_ENV
            raise DataError(f"No CIFAR-100 copy at {root} (from {source}): expected "
                            f"{root / FOLDER_NAME}/train, test and meta. {_how_to_point()}")
        return folder
    folder = _as_cifar_folder(DEFAULT_DATA_ROOT)
    if folder is not None:
        return folder
    if (DEFAULT_DATA_ROOT / FOLDER_NAME).exists():
        raise DataError(f"{DEFAULT_DATA_ROOT / FOLDER_NAME} exists but is incomplete (train, test "
                        f"and meta expected); it is not overwritten. Remove it to download "
                        f"again, or: {_how_to_point()}")
    if not download:
        raise DataError(f"CIFAR-100 not found under {DEFAULT_DATA_ROOT}. {_how_to_point()}")
    try:
        import torchvision
        DEFAULT_DATA_ROOT.mkdir(parents=True, exist_ok=True)
        torchvision.datasets.CIFAR100(str(DEFAULT_DATA_ROOT), train=True, download=True)
    except Exception as exc:  # offline machines fail here with URLError / OSError
        raise DataError(f"Could not download CIFAR-100 into {DEFAULT_DATA_ROOT} ({exc}). "
                        f"{_how_to_point()}") from exc
    folder = _as_cifar_folder(DEFAULT_DATA_ROOT)
    if folder is None:
        raise DataError(f"The download into {DEFAULT_DATA_ROOT} did not produce {FOLDER_NAME}/. "
                        f"{_how_to_point()}")
    return folder


def data_source(data_root: str | os.PathLike | None = None) -> Path:
    """What `load_cifar100(data_root)` reads: a packed subset (.npz) or the located folder."""
    explicit = data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV) or None
    if is_pack(explicit):
        return Path(explicit).expanduser()
    return locate_cifar100(data_root, download=False)


@dataclass(frozen=True)
class Cifar100:
    """The whole data set in memory. Images uint8 [N, 3, 32, 32]; labels int64 [N]."""

    train_images: np.ndarray
    train_fine: np.ndarray
    train_coarse: np.ndarray
    test_images: np.ndarray
    test_fine: np.ndarray
    test_coarse: np.ndarray
    fine_names: tuple[str, ...]
    coarse_names: tuple[str, ...]
    folder: str
    verified: bool

    @property
    def fine_to_coarse(self) -> np.ndarray:
        """[100] int64: the coarse label of each fine class, read off the training labels."""
        mapping = np.full(len(self.fine_names), -1, dtype=np.int64)
        mapping[self.train_fine] = self.train_coarse
        return mapping


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, MemoryError) as exc:
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}). Replace "
                        f"it with a complete copy. {_how_to_point()}") from exc


def _read_split(folder: Path, split: str, verify: bool):
    raw = _read_pickle(folder / split)
    if not isinstance(raw, dict) or not {"data", "fine_labels", "coarse_labels"} <= set(raw):
        raise DataError(f"{folder / split} is not a CIFAR-100 pickle (needs data, fine_labels, "
                        f"coarse_labels). {_how_to_point()}")
    data = np.asarray(raw["data"])
    fine = np.asarray(raw["fine_labels"])
    coarse = np.asarray(raw["coarse_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{folder / split}: data must be uint8 [N, 3072], got {data.dtype} "
                        f"{list(data.shape)}; the file is corrupt. {_how_to_point()}")
    if not (len(fine) == len(coarse) == len(data)):
        raise DataError(f"{folder / split}: {len(data)} images but {len(fine)} fine and "
                        f"{len(coarse)} coarse labels; the file is corrupt.")
    if len(fine) and (fine.min() < 0 or fine.max() > 99 or coarse.min() < 0 or coarse.max() > 19):
        raise DataError(f"{folder / split}: labels out of range (fine 0..99, coarse 0..19).")
    if verify:
        if len(data) != SPLIT_SIZES[split]:
            raise DataError(f"{folder / split} holds {len(data)} images, CIFAR-100's {split} split "
                            f"has {SPLIT_SIZES[split]}: the copy is truncated. {_how_to_point()}")
        arrays = {"data": data, "fine_labels": fine.astype(np.uint8),
                  "coarse_labels": coarse.astype(np.uint8)}
        for key, array in arrays.items():
            if _sha256(array) != CONTENT_SHA256[split][key]:
                raise DataError(f"{folder / split}: the decoded {key} differ from the published "
                                f"CIFAR-100 content (sha256 mismatch); the copy is corrupt or "
                                f"not CIFAR-100. {_how_to_point()}")
    images = data.reshape(-1, 3, 32, 32)
    return images, fine.astype(np.int64), coarse.astype(np.int64)


def load_cifar100(data_root: str | os.PathLike | None = None, verify: bool = True,
                  download: bool = True) -> Cifar100:
    """Locate (see module docstring), read and check CIFAR-100.

    verify=True (the default) accepts only the published content: 50,000/10,000 images whose
    decoded arrays match CONTENT_SHA256. verify=False checks structure only (for synthetic
    stand-ins in tests). Takes about half a second. A data_root ending in `.npz` is a packed
    subset, and a folder holding a parts manifest a pack in parts (see `pack_subset`), for machines
    without a full copy.
    """
    if is_pack(data_root if data_root is not None else os.environ.get(DATA_ROOT_ENV) or None):
        return load_packed(data_source(data_root))
    folder = locate_cifar100(data_root, download=download)
    meta = _read_pickle(folder / "meta")
    if not isinstance(meta, dict) or "fine_label_names" not in meta or "coarse_label_names" not in meta:
        raise DataError(f"{folder / 'meta'} lacks fine_label_names/coarse_label_names; corrupt.")
    fine_names = tuple(meta["fine_label_names"])
    coarse_names = tuple(meta["coarse_label_names"])
    if len(fine_names) != 100 or len(coarse_names) != 20:
        raise DataError(f"{folder / 'meta'}: expected 100 fine and 20 coarse names, got "
                        f"{len(fine_names)} and {len(coarse_names)}.")
    if verify and (fine_names != FINE_NAMES or coarse_names != COARSE_NAMES):
        raise DataError(f"{folder / 'meta'}: class names differ from CIFAR-100's; corrupt copy.")
    train = _read_split(folder, "train", verify)
    test = _read_split(folder, "test", verify)
    return Cifar100(*train, *test, fine_names=fine_names, coarse_names=coarse_names,
                    folder=str(folder), verified=verify)


# ----------------------------------------------------------------------------- class subsets
def random_classes(k: int, seed: int, num_classes: int = 100) -> list[int]:
    """k of range(num_classes) drawn uniformly without replacement, sorted ascending.

    The draw orders classes by sha256("seed:class") and keeps the first k: a uniformly random
    permutation that depends on nothing but (seed, class), so every machine and every version
    of numpy/torch/Python picks the same classes.
    """
    if int(k) != k or not 2 <= k <= num_classes:
        raise ValueError(f"a random subset needs 2 <= k <= {num_classes} classes, got {k}")
    keys = {c: hashlib.sha256(f"{int(seed)}:{c}".encode()).hexdigest() for c in range(num_classes)}
    return sorted(sorted(range(num_classes), key=keys.__getitem__)[:k])


def select_classes(kind: str | Sequence[str], data: Cifar100, k: int | None = None,
                   seed: int = 0) -> list[int]:
    """Original fine-class indices (ascending) of a subset.

    kind: 'random' (k classes from seed), 'all' (100), 'mammals' (the 25 fine classes of the
    five mammal superclasses, read off the coarse labels), or a list of fine class names.
    """
    if isinstance(kind, str):
        if kind == "random":
            if k is None:
                raise ValueError("the 'random' class subset needs k (the number of classes)")
            return random_classes(k, seed, len(data.fine_names))
        if kind == "all":
            if k not in (None, len(data.fine_names)):
                raise ValueError(f"'all' means K = {len(data.fine_names)}, got k = {k}")
            return list(range(len(data.fine_names)))
        if kind == "mammals":
            coarse = [data.coarse_names.index(name) for name in MAMMAL_SUPERCLASSES]
            chosen = sorted(np.flatnonzero(np.isin(data.fine_to_coarse, coarse)).tolist())
            if k not in (None, len(chosen)):
                raise ValueError(f"'mammals' has {len(chosen)} classes, got k = {k}")
            return chosen
        raise ValueError(f"unknown class subset {kind!r}: choose one of {', '.join(SUBSET_KINDS)} "
                         f"or give a list of CIFAR-100 class names")
    names = check_class_names(kind, data.fine_names)
    if k not in (None, len(names)):
        raise ValueError(f"{len(names)} class names given but k = {k}")
    return sorted(data.fine_names.index(n) for n in names)


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


def resolve_cap(split: str, cap: int | None) -> int | None:
    """A cap on images per class of `split`: None when it keeps them all, ValueError past the data.

    CIFAR-100 has 500 training and 100 test images per class; a larger cap would silently
    train on fewer images than the configuration says, so it is an error.
    """
    available = IMAGES_PER_CLASS[split]
    if cap is None or (not isinstance(cap, bool) and cap == available):
        return None
    if isinstance(cap, bool) or int(cap) != cap or not 1 <= cap <= available:
        raise ValueError(f"{split}_per_class must be an integer from 1 to {available} (CIFAR-100 "
                         f"has {available} {split} images per class) or None for all, got {cap}")
    return int(cap)


def published_class_indices(classes: str | Sequence[str], k: int, class_seed: int) -> list[int]:
    """What `select_classes` picks on the real CIFAR-100, from its published names alone (no data
    needed): e.g. to tell whether a pack holds a run's classes."""
    if classes == "random":
        return random_classes(k, class_seed)
    if classes == "all":
        return list(range(len(FINE_NAMES)))
    if classes == "mammals":
        return [i for i, c in enumerate(FINE_TO_COARSE) if COARSE_NAMES[c] in MAMMAL_SUPERCLASSES]
    return sorted(FINE_NAMES.index(n) for n in check_class_names(classes))


def check_class_names(names: Sequence[str], valid: Sequence[str] = FINE_NAMES) -> list[str]:
    """The names as a list if they are >= 2 distinct CIFAR-100 fine class names, else ValueError."""
    names = list(names)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown CIFAR-100 class names {unknown}; valid names are in "
                         f"ccql_utils.data.FINE_NAMES")
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

    @property
    def num_classes(self) -> int:
        return len(self.class_indices)


def make_subset(data: Cifar100, class_indices: Sequence[int], train_per_class: int | None = None,
                test_per_class: int | None = None) -> ClassificationSubset:
    """Keep the images of `class_indices` (original fine indices), labels remapped to 0..K-1 in
    ascending original index. train_per_class / test_per_class cap the images per class (the
    first ones in the original order); None keeps them all (the paper's protocol).
    """
    classes = sorted(int(c) for c in class_indices)
    train_per_class = resolve_cap("train", train_per_class)
    test_per_class = resolve_cap("test", test_per_class)
    remap = np.full(len(data.fine_names), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))

    def pick(images, fine, cap):
        keep = np.isin(fine, classes)
        if cap is not None:
            # rank of each image within its class, in original order
            rank = np.zeros(len(fine), dtype=np.int64)
            for c in classes:
                members = np.flatnonzero(fine == c)
                rank[members] = np.arange(len(members))
            keep &= rank < cap
        return np.ascontiguousarray(images[keep]), remap[fine[keep]]

    train_images, train_labels = pick(data.train_images, data.train_fine, train_per_class)
    test_images, test_labels = pick(data.test_images, data.test_fine, test_per_class)
    for split, labels, cap in (("train", train_labels, train_per_class), ("test", test_labels, test_per_class)):
        counts = np.bincount(labels, minlength=len(classes))
        # Real CIFAR-100 (or a packed part of it) must give every class its full count: a packed
        # subset lacking classes or images would otherwise train on less than the config says.
        expected = cap or IMAGES_PER_CLASS[split] if data.verified else 1
        short = [data.fine_names[c] for c, n in zip(classes, counts) if n < expected]
        if short:
            raise DataError(f"{data.folder} has fewer than {expected} {split} images of class(es) "
                            f"{short[:5]}{' ...' if len(short) > 5 else ''}: pack a subset that "
                            f"holds these classes and images per class")
    return ClassificationSubset(train_images, train_labels, test_images, test_labels,
                                tuple(classes), tuple(data.fine_names[c] for c in classes))


# ----------------------------------------------------------------------------- packed subsets
# A pack is a class subset written by `pack_subset` for a machine without the full copy: one .npz,
# or a folder of parts (for transfers with a size limit) that `load_packed` reassembles. A pack
# never vouches for itself: it counts as the real CIFAR-100 only when every image and label matches
# INDEX_FILE (the real data's fine labels and an 8-byte sha256 prefix of each image, in the
# published order), so forged pixels can never train under the real data's run ids.
PACKED_ARRAYS = ("train_images", "train_fine", "train_coarse", "test_images", "test_fine", "test_coarse")
INDEX_FILE = Path(__file__).with_name("cifar100_index.npz")
MANIFEST = "manifest.json"
PARTS_FORMAT = "ccql_utils pack in parts, v1"
# A part and a checkout of up to 14 MiB fit one 64 MiB transfer; all 100 classes are 4 parts.
PART_MIB = 50


def is_pack(root: str | os.PathLike | None) -> bool:
    """Whether a data root names a pack: a .npz file or a folder holding a parts manifest."""
    return root is not None and (str(root).endswith(".npz") or (Path(root).expanduser() / MANIFEST).is_file())


def _image_digests(images: np.ndarray) -> np.ndarray:
    """[N, 8] uint8: the first 8 bytes of each image's sha256 (the index's per-image check)."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    return np.frombuffer(b"".join(hashlib.sha256(row.tobytes()).digest()[:8] for row in flat),
                         dtype=np.uint8).reshape(len(images), 8)


def matches_real_data(arrays: dict[str, np.ndarray]) -> bool:
    """True when packed arrays are exactly what `pack_subset` takes from the real CIFAR-100: for
    each class, its first n images of each split in the published order, with their labels."""
    with np.load(INDEX_FILE) as index:
        for split in ("train", "test"):
            fine, coarse = arrays[f"{split}_fine"], arrays[f"{split}_coarse"]
            if len(fine) and (fine.min() < 0 or fine.max() > 99):
                return False
            if not np.array_equal(coarse, np.asarray(FINE_TO_COARSE)[fine]):
                return False
            real = index[f"{split}_fine"]
            keep = np.zeros(len(real), dtype=bool)
            for c, n in zip(*np.unique(fine, return_counts=True)):
                keep[np.flatnonzero(real == c)[:n]] = True
            rows = np.flatnonzero(keep)
            if len(rows) != len(fine) or not np.array_equal(real[rows], fine):
                return False
            if not np.array_equal(_image_digests(arrays[f"{split}_images"]), index[f"{split}_digest"][rows]):
                return False
    return True


def pack_arrays(data: Cifar100, class_indices: Sequence[int], train_per_class: int | None = None,
                test_per_class: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The images of `class_indices` (the first N per class, as `make_subset` picks them) with their
    original labels, and a description (classes, caps, per-array sha256 to detect damage)."""
    classes = sorted(int(c) for c in class_indices)
    caps = {"train": resolve_cap("train", train_per_class), "test": resolve_cap("test", test_per_class)}
    arrays = {}
    for split in ("train", "test"):
        fine = getattr(data, f"{split}_fine")
        keep = np.zeros(len(fine), dtype=bool)
        for c in classes:
            keep[np.flatnonzero(fine == c)[:caps[split]]] = True
        arrays[f"{split}_images"] = np.ascontiguousarray(getattr(data, f"{split}_images")[keep])
        arrays[f"{split}_fine"] = fine[keep].astype(np.int64)
        arrays[f"{split}_coarse"] = getattr(data, f"{split}_coarse")[keep].astype(np.int64)
    meta = {"classes": [data.fine_names[c] for c in classes], "train_per_class": caps["train"],
            "test_per_class": caps["test"], "sha256": {name: _sha256(arrays[name]) for name in PACKED_ARRAYS}}
    return arrays, meta


def pack_subset(data: Cifar100, path: str | os.PathLike, class_indices: Sequence[int],
                train_per_class: int | None = None, test_per_class: int | None = None,
                part_mib: float | None = None) -> Path:
    """Write a class subset (see `pack_arrays`) atomically: to `path` as one uncompressed .npz, or,
    when `path` does not end in .npz, as a folder of parts of at most `part_mib` MiB and a manifest (each part's size and sha256, and the whole's).

    `load_cifar100(path)` reads it back as a Cifar100 holding only these images, so run configs
    select exactly the subsets they select on the full data set (and get the same run ids).
    """
    import io
    path = Path(path)
    arrays, meta = pack_arrays(data, class_indices, train_per_class, test_per_class)
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    payload = buffer.getbuffer()
    if path.name.endswith(".npz"):
        if part_mib is not None:
            raise ValueError("part_mib (--part-mib) writes a folder of parts: give an output without .npz")
        if path.is_dir():
            raise ValueError(f"{path} is a folder: give a new .npz file, or a folder name without .npz for parts")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, payload)
        return path
    part_bytes = int(float(PART_MIB if part_mib is None else part_mib) * 2**20)
    if part_bytes < 2**20:
        raise ValueError(f"part_mib (--part-mib) must be at least 1, got {part_mib}")
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or (path / MANIFEST).is_file())):
        raise ValueError(f"{path} exists and is not a pack folder: choose a new output folder")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        parts = []
        for i, start in enumerate(range(0, len(payload), part_bytes)):
            chunk = payload[start:start + part_bytes]
            name = f"part-{i:03d}"
            (tmp / name).write_bytes(chunk)
            parts.append({"name": name, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
        manifest = {"format": PARTS_FORMAT, "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                    "parts": parts, **{k: meta[k] for k in ("classes", "train_per_class", "test_per_class")}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def pack_contents(path: str | os.PathLike) -> dict:
    """A pack's classes and images per class (None: all), read without loading its images."""
    path = Path(path).expanduser()
    if path.is_dir():
        meta = read_manifest(path)
    else:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path} is not a readable pack ({type(exc).__name__}: {exc})") from None
    return {k: meta.get(k) for k in ("classes", "train_per_class", "test_per_class")}


def read_manifest(folder: str | os.PathLike) -> dict:
    """A parts folder's manifest, checked for shape; DataError naming the folder otherwise."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        parts = manifest["parts"]
        if manifest.get("format") != PARTS_FORMAT or not all(
                isinstance(p, dict) and {"name", "bytes", "sha256"} <= set(p) and "/" not in str(p["name"])
                and str(p["name"]) not in ("", ".", "..") for p in parts):
            raise ValueError("not a parts manifest")
        int(manifest["bytes"]), str(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{folder / MANIFEST} is missing or not a parts manifest ({exc}); pack the "
                        f"data again with `python -m ccql_utils pack`") from None
    return manifest


def _reassemble(folder: Path) -> bytes:
    """The bytes of a parts folder, every part checked against the manifest first; one DataError
    line names all the parts that are missing or damaged."""
    manifest = read_manifest(folder)
    parts, chunks, missing, damaged = manifest["parts"], [], [], []
    for part in parts:
        path = folder / part["name"]
        if not path.is_file():
            missing.append(part["name"])
            continue
        chunk = path.read_bytes()
        if len(chunk) != part["bytes"] or hashlib.sha256(chunk).hexdigest() != part["sha256"]:
            damaged.append(f"{part['name']} ({len(chunk)} of {part['bytes']} bytes or another sha256)")
        chunks.append(chunk)
    if missing or damaged:
        raise DataError(f"{folder}: of {len(parts)} parts, " + "; ".join(
            f"{what}: {', '.join(names)}" for what, names in (("missing", missing), ("damaged", damaged))
            if names) + "; carry those again")
    payload = b"".join(chunks)
    if len(payload) != manifest["bytes"] or hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
        raise DataError(f"{folder}: the reassembled parts do not match the manifest's sha256; pack again")
    return payload


def load_packed(path: str | os.PathLike) -> Cifar100:
    """A Cifar100 holding a pack's images (all 100 class names); DataError if damaged.

    `verified` is decided here, from the images and labels themselves (`matches_real_data`),
    never taken from the pack.
    """
    import io
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no pack at {path}: pack one with `python -m ccql_utils pack`")
    source = io.BytesIO(_reassemble(path)) if path.is_dir() else path
    try:
        with np.load(source, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {name: z[name] for name in PACKED_ARRAYS}
        bad = [n for n in PACKED_ARRAYS if _sha256(arrays[n]) != meta["sha256"][n]]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path} is not a readable pack ({type(exc).__name__}: {exc}); "
                        f"pack it again with `python -m ccql_utils pack`") from None
    if bad:
        raise DataError(f"{path}: arrays {bad} do not match their recorded sha256; the file is "
                        f"truncated or altered. Pack it again.")
    images_ok = all(arrays[f"{s}_images"].dtype == np.uint8 and arrays[f"{s}_images"].shape[1:] == (3, 32, 32)
                    and len(arrays[f"{s}_images"]) == len(arrays[f"{s}_fine"]) == len(arrays[f"{s}_coarse"])
                    and np.all((arrays[f"{s}_fine"] >= 0) & (arrays[f"{s}_fine"] < len(FINE_NAMES)))
                    and np.all((arrays[f"{s}_coarse"] >= 0) & (arrays[f"{s}_coarse"] < len(COARSE_NAMES)))
                    for s in ("train", "test"))
    if not images_ok:
        raise DataError(f"{path}: images must be uint8 [N, 3, 32, 32] with one fine (0-99) and one "
                        f"coarse (0-19) label each; the pack is malformed. Pack it again.")
    return Cifar100(*(arrays[n] for n in PACKED_ARRAYS), fine_names=FINE_NAMES,
                    coarse_names=COARSE_NAMES, folder=str(path), verified=matches_real_data(arrays))


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
    """Write a small learnable stand-in in torchvision's layout under `root/cifar-100-python`.

    Each class is a fixed random low-frequency colour pattern plus pixel noise, so a small
    network learns it in a few epochs. Load it with `load_cifar100(root, verify=False)`.
    It uses CIFAR-100's class names and superclass map, so every subset kind works on it.
    """
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
