"""The published CIFAR-100: its class names, the checksums of its content, reading a copy in
torchvision's layout into a `Cifar100`, and the per-class image caps (`packs` and `data` build on it).
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_ROOT_ENV = "CCQL_DATA_ROOT"
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
# The end of every error about a missing or damaged copy: how to name another one.
HOW_TO_POINT = (f"Point the project at a copy in torchvision's layout ({FOLDER_NAME}/ with train, test, "
                f"meta) with --data-root PATH or the environment variable {DATA_ROOT_ENV}=PATH.")
SPLIT_SIZES = {"train": 50_000, "test": 10_000}
IMAGES_PER_CLASS = {"train": 500, "test": 100}   # in every CIFAR-100 class

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


class DataError(RuntimeError):
    """CIFAR-100 is missing, truncated or not the published content."""


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


def array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            ImportError, IndexError, MemoryError) as exc:
        raise DataError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}). Replace "
                        f"it with a complete copy. {HOW_TO_POINT}") from exc


def _read_split(folder: Path, split: str, verify: bool):
    raw = _read_pickle(folder / split)
    if not isinstance(raw, dict) or not {"data", "fine_labels", "coarse_labels"} <= set(raw):
        raise DataError(f"{folder / split} is not a CIFAR-100 pickle (needs data, fine_labels, "
                        f"coarse_labels). {HOW_TO_POINT}")
    data = np.asarray(raw["data"])
    fine = np.asarray(raw["fine_labels"])
    coarse = np.asarray(raw["coarse_labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{folder / split}: data must be uint8 [N, 3072], got {data.dtype} "
                        f"{list(data.shape)}; the file is corrupt. {HOW_TO_POINT}")
    if not (len(fine) == len(coarse) == len(data)):
        raise DataError(f"{folder / split}: {len(data)} images but {len(fine)} fine and "
                        f"{len(coarse)} coarse labels; the file is corrupt.")
    if len(fine) and (fine.min() < 0 or fine.max() > 99 or coarse.min() < 0 or coarse.max() > 19):
        raise DataError(f"{folder / split}: labels out of range (fine 0..99, coarse 0..19).")
    if verify:
        if len(data) != SPLIT_SIZES[split]:
            raise DataError(f"{folder / split} holds {len(data)} images, CIFAR-100's {split} split "
                            f"has {SPLIT_SIZES[split]}: the copy is truncated. {HOW_TO_POINT}")
        arrays = {"data": data, "fine_labels": fine.astype(np.uint8),
                  "coarse_labels": coarse.astype(np.uint8)}
        for key, array in arrays.items():
            if array_sha256(array) != CONTENT_SHA256[split][key]:
                raise DataError(f"{folder / split}: the decoded {key} differ from the published "
                                f"CIFAR-100 content (sha256 mismatch); the copy is corrupt or "
                                f"not CIFAR-100. {HOW_TO_POINT}")
    return data.reshape(-1, 3, 32, 32), fine.astype(np.int64), coarse.astype(np.int64)


def read_folder(folder: Path, verify: bool) -> Cifar100:
    """Read and check the train, test and meta pickles of a `cifar-100-python` folder. verify=True
    accepts only the published content (SPLIT_SIZES images, CONTENT_SHA256, the published class
    names); verify=False checks structure only."""
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


def resolve_cap(split: str, cap: int | None) -> int | None:
    """A cap on images per class of `split`: None when it keeps them all; ValueError past the data
    (a larger cap would silently train on fewer images than the configuration says)."""
    available = IMAGES_PER_CLASS[split]
    if cap is None or (not isinstance(cap, bool) and cap == available):
        return None
    if isinstance(cap, bool) or int(cap) != cap or not 1 <= cap <= available:
        raise ValueError(f"{split}_per_class must be an integer from 1 to {available} (CIFAR-100 "
                         f"has {available} {split} images per class) or None for all, got {cap}")
    return int(cap)


def first_per_class(fine: np.ndarray, counts: dict[int, int | None]) -> np.ndarray:
    """Boolean mask over the labels `fine`: the first counts[c] (None: all) images of each class c,
    in the published order. Subsets (`data.make_subset`) and packs take their images this way."""
    keep = np.zeros(len(fine), dtype=bool)
    for c, n in counts.items():
        keep[np.flatnonzero(fine == c)[:n]] = True
    return keep
