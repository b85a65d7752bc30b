"""Provenance records and figure saving: every figure in `figures/` says how it was made.

`save_figure(fig, name, data, params)` writes `<name>.png`, `<name>.pdf`, `<name>.csv` (the data
behind the figure) and `<name>.provenance.json` (parameters, package versions, commit, date).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FIGURES_DIR = PROJECT_ROOT / "figures"


# What drawing figures writes: changes there do not make the code that drew them differ.
OUTPUT_FOLDERS = ("figures", "outputs", "results")


def git_commit(repo: Path = PROJECT_ROOT) -> str:
    """The current commit hash, or 'unknown'. Uncommitted changes to tracked files outside
    OUTPUT_FOLDERS add '-dirty-' and 12 hex digits of the sha256 of their diff, which pins the
    code that ran (a figure drawn while earlier figures of the same notebook changed stays clean)."""
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, timeout=10,
                                  check=True).stdout
        commit = git("rev-parse", "HEAD").decode().strip()
        diff = git("diff", "HEAD", "--", ".", *(f":(exclude){f}" for f in OUTPUT_FOLDERS))
        return commit + (f"-dirty-{hashlib.sha256(diff).hexdigest()[:12]}" if diff.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_record() -> dict[str, Any]:
    """Versions of Python and the packages that shape results, the host and the date (UTC)."""
    import numpy
    record: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "commit": git_commit(),
        "python": platform.python_version(), "numpy": numpy.__version__, "host": platform.node(),
        "platform": platform.platform()}
    try:
        from importlib.metadata import version
        record["ccql_utils"] = version("ccql_utils")
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        record["ccql_utils"] = "source"
    torch = sys.modules.get("torch")  # only where it made the figure: the theory needs none
    record["torch"] = torch.__version__ if torch else None
    record["cuda_device"] = torch.cuda.get_device_name(0) if torch and torch.cuda.is_available() else None
    return record


def describe_device(device) -> str:
    """The CUDA device's name (torch.cuda.get_device_name), or 'cpu (N cores, M threads)'."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def _jsonable(value: Any) -> Any:
    """Numpy scalars/arrays, paths and dataclasses made JSON-serialisable."""
    import dataclasses
    import numpy as np
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, Path)) and Path(value).is_absolute():
        # relative to the repository, else only its last part: an absolute path says nothing to a
        # reader elsewhere and would leak a home folder
        try:
            return str(Path(value).resolve().relative_to(PROJECT_ROOT))
        except ValueError:
            return f"<outside the repository>/{Path(value).name}"
    return str(value) if isinstance(value, Path) else value


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write `data` to `path` so readers see the old or the new file, never a partial one; on a
    failure (a full disk, no permission) the old file is left as it was and the OSError propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_open(path: Path):
    """A binary file to stream into that appears at `path` only once complete (written under a
    temporary name in the same folder, flushed to disk, renamed): a kill or an error (the
    exception propagates) leaves the old file, or none, never a partial one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_figure(fig, name: str, data=None, params: Mapping[str, Any] | None = None,
                figures_dir: str | Path | None = None, caption: str = "") -> dict[str, Path]:
    """Save `fig` as PNG and PDF, `data` (a pandas DataFrame) as CSV, and a provenance JSON; returns
    the paths written, keyed 'png', 'pdf', 'csv' (if data), 'provenance'. name: the file stem (e.g.
    'fig1_k25_random'); params: everything that determined the figure (preset, hyper-parameters,
    seeds, class names, ...); caption: one line on what it shows."""
    out_dir = Path(figures_dir) if figures_dir is not None else DEFAULT_FIGURES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"png": out_dir / f"{name}.png", "pdf": out_dir / f"{name}.pdf",
             "provenance": out_dir / f"{name}.provenance.json"}
    # drawn in memory, published atomically: never a truncated file beside a record naming it
    for kind, options in (("png", {"dpi": 150}),
                          # a fixed CreationDate keeps the PDF byte-stable when the figure did not change
                          ("pdf", {"metadata": {"CreationDate": None}})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=kind, bbox_inches="tight", **options)
        atomic_write_bytes(paths[kind], buffer.getbuffer())
    if data is not None:
        paths["csv"] = out_dir / f"{name}.csv"
        atomic_write_text(paths["csv"], data.to_csv(index=False))
    record = {"figure": name, "caption": caption, "parameters": _jsonable(dict(params or {})),
              "environment": environment_record(),
              "files": sorted(p.name for p in paths.values())}
    atomic_write_text(paths["provenance"], json.dumps(record, indent=2, sort_keys=False) + "\n")
    return paths
