"""Packed subsets of CIFAR-100, for a machine without the full copy: one .npz, or a folder of
parts (for transfers with a size limit) that `load_packed` reassembles.

A pack never vouches for itself: it counts as the real CIFAR-100 only when every image and label
matches INDEX_FILE (the real data's fine labels and an 8-byte sha256 prefix of each image, in the
published order), so forged pixels can never train under the real data's run ids.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .cifar100 import (COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE, Cifar100, DataError, array_sha256,
                       first_per_class, resolve_cap)
from ..provenance import atomic_write_bytes

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
            rows = np.flatnonzero(first_per_class(real, dict(zip(*np.unique(fine, return_counts=True)))))
            if len(rows) != len(fine) or not np.array_equal(real[rows], fine):
                return False
            if not np.array_equal(_image_digests(arrays[f"{split}_images"]), index[f"{split}_digest"][rows]):
                return False
    return True


def pack_arrays(data: Cifar100, class_indices: Sequence[int], train_per_class: int | None = None,
                test_per_class: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The images of `class_indices` (`first_per_class`) with their original labels, and a
    description (classes, caps, per-array sha256 to detect damage)."""
    classes = sorted(int(c) for c in class_indices)
    caps = {"train": resolve_cap("train", train_per_class), "test": resolve_cap("test", test_per_class)}
    arrays = {}
    for split in ("train", "test"):
        fine = getattr(data, f"{split}_fine")
        keep = first_per_class(fine, dict.fromkeys(classes, caps[split]))
        arrays[f"{split}_images"] = np.ascontiguousarray(getattr(data, f"{split}_images")[keep])
        arrays[f"{split}_fine"] = fine[keep].astype(np.int64)
        arrays[f"{split}_coarse"] = getattr(data, f"{split}_coarse")[keep].astype(np.int64)
    meta = {"classes": [data.fine_names[c] for c in classes], "train_per_class": caps["train"],
            "test_per_class": caps["test"],
            "sha256": {name: array_sha256(arrays[name]) for name in PACKED_ARRAYS}}
    return arrays, meta


def pack_subset(data: Cifar100, path: str | os.PathLike, class_indices: Sequence[int],
                train_per_class: int | None = None, test_per_class: int | None = None,
                part_mib: float | None = None) -> Path:
    """Write a class subset (`pack_arrays`) atomically: as one uncompressed .npz, or, when `path`
    does not end in .npz, as a folder of parts of at most `part_mib` MiB and a manifest (each
    part's size and sha256, and the whole's). Run configs select the same subsets (and run ids)
    from `load_cifar100(path)` as from the full data set."""
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
    """A Cifar100 holding a pack's images (all 100 class names); DataError if damaged. `verified`
    is decided from the images and labels themselves (`matches_real_data`), never read from the pack."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"no pack at {path}: pack one with `python -m ccql_utils pack`")
    source = io.BytesIO(_reassemble(path)) if path.is_dir() else path
    try:
        with np.load(source, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {name: z[name] for name in PACKED_ARRAYS}
        bad = [n for n in PACKED_ARRAYS if array_sha256(arrays[n]) != meta["sha256"][n]]
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

