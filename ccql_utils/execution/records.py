"""Run records between machines: train on a GPU node, draw on a laptop. A record is a finished or
diverged run's RECORD_FILES (config.json, metrics.csv, status.json); `export_records` copies
records to a folder or a .tar.gz, `import_records` adds them to a runs folder. Both write
atomically, and import trusts nothing a source holds (links, foreign paths, oversized files,
values out of range are refused before anything is written)."""
from __future__ import annotations

import io
import json
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from ..core.config import TrainConfig
from ..provenance import atomic_open
from .store import FINAL_STATES, HISTORY_COLUMNS, RECORD_FILES, Run, _is_locked, load_run
from ..core.train import RunError

MAX_RECORD_FILE_BYTES = 64 * 2**20  # per record file (a 200-epoch metrics.csv is ~40 KB)
IMPORT_FIX = "re-export it on the machine that trained it"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _why(exc: OSError) -> str:
    return exc.strerror or _one_line(exc)


def _refused(where: Any, reason: str) -> RunError:
    return RunError(f"{where}: {reason}; nothing imported ({IMPORT_FIX})")


def _export_failed(destination: Path, exc: OSError, kept: str) -> RunError:
    return RunError(f"could not write {destination} ({_why(exc)}); {kept}: free space or fix "
                    f"permissions, then export again")


def _write_archive(destination: Path, runs: list[Run]) -> None:
    """The records as a .tar.gz, streamed through `atomic_open`: the previous archive or none,
    never a partial one."""
    existed = destination.exists()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(destination) as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for run in runs:
                for name in RECORD_FILES:
                    path, member = run.run_dir / name, tarfile.TarInfo(f"{run.run_dir.name}/{name}")
                    data = path.read_bytes()
                    member.size, member.mode, member.mtime = len(data), 0o644, int(path.stat().st_mtime)
                    tar.addfile(member, io.BytesIO(data))
    except OSError as exc:
        raise _export_failed(destination, exc, "the previous archive is intact" if existed
                             else "no archive was written") from None


def _write_folders(destination: Path, runs: list[Run]) -> None:
    """Each record as a folder, staged and moved into place (`_move_into_place`), replacing an
    earlier export's; never over a runs folder's run (one holding more than a record)."""
    for run in runs:
        target = destination / run.run_dir.name
        if target.is_dir() and {p.name for p in target.iterdir()} - set(RECORD_FILES):
            raise RunError(f"{target} holds more than a run record (a runs folder's run?); export "
                           f"to a folder of records, and add them to a runs folder with import")
    for run in runs:
        target = destination / run.run_dir.name
        staging = _staging(destination, target.name, "export")
        try:
            staging.mkdir(parents=True)
            for name in RECORD_FILES:
                shutil.copyfile(run.run_dir / name, staging / name)
            _move_into_place(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise _export_failed(target, exc, "the folders already written are complete") from None


def _staging(folder: Path, run_id: str, kind: str) -> Path:
    """A hidden temporary name for a run folder being written (a killed write's is removed)."""
    staging = folder / f".{run_id}.{kind}-{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the complete folder `staging` to `target`, replacing what is there (moved aside
    first, then removed): at every moment `target` is the old folder, the new one, or absent."""
    if not (target.exists() or target.is_symlink()):
        os.rename(staging, target)
        return
    old = target.with_name(f".{target.name}.replaced-{os.getpid()}.tmp")
    shutil.rmtree(old, ignore_errors=True)
    os.rename(target, old)
    os.rename(staging, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()


def export_records(run_dirs: Iterable[str | Path], destination: str | Path) -> list[str]:
    """Copy the records (no checkpoints) of the finished or diverged runs among `run_dirs` to
    `destination`, a folder or a .tar.gz archive; returns the run ids exported. Folders starting
    with '.' (an interrupted import's or export's) are skipped. RunError (one line) for a
    destination inside the runs exported, an archive name that is a folder, a folder name that
    is a file, and a failed write."""
    run_dirs = [Path(d) for d in run_dirs if not Path(d).name.startswith(".")]
    destination = Path(destination)
    archive = destination.name.endswith((".tar.gz", ".tgz"))
    if archive and destination.is_dir():
        raise RunError(f"{destination} is a folder; name a new archive file (e.g. records.tar.gz)")
    if not archive and destination.exists() and not destination.is_dir():
        raise RunError(f"{destination} is a file, not a folder; name a folder, or an archive "
                       f"ending .tar.gz")
    where = destination.resolve()
    for run_dir in map(Path.resolve, run_dirs):
        if run_dir in (where, *where.parents) or (not archive and run_dir.parent in (where, where.parent)):
            raise RunError(f"{destination} is in (or is) the runs folder {run_dir.parent} being "
                           f"exported; export to a folder or archive outside it")
    final = [run for run in map(load_run, run_dirs) if run.state in FINAL_STATES]
    (_write_archive if archive else _write_folders)(destination, final)
    return [r.run_dir.name for r in final]


def _archive_member(archive: Path, member: tarfile.TarInfo) -> tuple[str, str | None]:
    """(run id, file name) of an archive member, (run id, None) for a run folder's own entry;
    a RunError for anything an exported archive does not hold (links, devices, paths that
    leave the folder, other files, oversized files), judged from its header before reading."""
    name = member.name[:-1] if member.isdir() and member.name.endswith("/") else member.name
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") or "\\" in part for part in parts):
        refuse = "a path that is not <run folder>/<file>"
    elif member.issym() or member.islnk():
        refuse = "a link"
    elif member.isdir() and len(parts) == 1:
        return parts[0], None
    elif not member.isfile():
        refuse = "not a regular file"
    elif len(parts) != 2 or parts[1] not in RECORD_FILES:
        refuse = f"not a run record file (only <run folder>/{', '.join(RECORD_FILES)})"
    elif member.size > MAX_RECORD_FILE_BYTES:
        refuse = f"{member.size} bytes, more than a record file may hold ({MAX_RECORD_FILE_BYTES})"
    else:
        return parts[0], parts[1]
    raise _refused(f"{archive} member {_one_line(member.name)!r}", refuse)


def _read_archive(archive: Path) -> dict[str, dict[str, bytes]]:
    """run id -> {record file: content} of an archive made by `export_records`, read in memory
    (nothing is extracted). The whole compressed stream is read to its end, so a truncated
    archive fails its length and checksum checks even where the tar headers look complete."""
    records: dict[str, dict[str, bytes]] = {}
    tar = last = None
    try:
        tar = tarfile.open(archive, "r:*")
        with tar:
            for member in tar:
                run_id, name = _archive_member(archive, member)
                last, files = member.name, records.setdefault(run_id, {})
                if name in files:
                    raise RunError(f"{archive} member {run_id}/{name} appears twice; nothing "
                                   f"imported ({IMPORT_FIX})")
                if name is not None:  # None: the run folder's own entry
                    files[name] = tar.extractfile(member).read()
            while tar.fileobj.read(1 << 20):
                pass
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        if tar is None and isinstance(exc, OSError) and exc.errno is not None:
            raise RunError(f"{archive} cannot be read ({_why(exc)})") from None
        if tar is None:
            raise _refused(archive, "not a tar archive (.tar.gz, .tgz or .tar) of run records") from None
        after = f" after member {last}" if last else ""
        raise _refused(archive, f"not a complete archive of run records{after} "
                                f"({_one_line(exc) or type(exc).__name__})") from None
    return records


def _read_folder(source: Path) -> dict[str, dict[str, bytes]]:
    """run id -> {record file: content} of a folder of run folders (other files, and folders
    starting with '.', are ignored); record files must be regular files within the size cap."""
    records: dict[str, dict[str, bytes]] = {}
    for folder in sorted(source.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if folder.is_symlink():
            raise _refused(folder, "a link to a folder, not a run record; copy the record itself")
        files = records[folder.name] = {}
        for name in RECORD_FILES:
            path = folder / name
            try:
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode):
                    raise _refused(path, "not a regular file (a link?)")
                if info.st_size > MAX_RECORD_FILE_BYTES:
                    raise _refused(path, f"{info.st_size} bytes, more than a record file may hold "
                                         f"({MAX_RECORD_FILE_BYTES})")
                files[name] = path.read_bytes()
            except FileNotFoundError:
                continue  # reported as missing by `_check_record`
            except OSError as exc:
                raise RunError(f"{path}: cannot be read ({_why(exc)})") from None
    return records


def _check_values(history: pd.DataFrame, diverged: bool, bad: Callable) -> None:
    """Losses finite and >= 0, accuracies and ECE in [0, 1], lr and seconds finite and >= 0; train_clean_*
    may be empty (NaN) in epochs where the clean pass did not run. In a diverged run's last row a
    loss may also be NaN or +inf, an accuracy NaN (the row that recorded the divergence)."""
    import numpy as np
    for column in history.columns:
        series = history[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise bad("metrics.csv", f"column {column} is not numeric")
        values = series.to_numpy(dtype=float)
        if column.endswith(("_loss", "_loss_norm")):
            ok, relaxed = np.isfinite(values) & (values >= 0), np.isnan(values) | (values >= 0)
        elif column.endswith(("_acc", "_ece")):
            ok = (values >= 0) & (values <= 1)
            relaxed = ok | np.isnan(values)
        elif column in ("lr", "seconds"):
            ok = relaxed = np.isfinite(values) & (values >= 0)
        else:
            continue
        if column.startswith("train_clean_"):
            ok = ok | np.isnan(values)
        if diverged and len(values):
            ok[-1] = relaxed[-1]
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise bad("metrics.csv", f"{column} is {values[row]} in epoch {row + 1}, out of range")


def _check_record(run_id: str, files: dict[str, bytes], bad: Callable) -> tuple[dict, dict, pd.DataFrame]:
    """(config.json's record, status, history) of a record consistent with its own configuration
    (see `import_records`); raises bad(file, reason) for the first fault found."""
    import numpy as np
    parsed = {}
    for name in RECORD_FILES:
        if name not in files:
            raise bad(name, "missing (a record is config.json, metrics.csv and status.json)")
    for name in ("config.json", "status.json"):
        try:
            parsed[name] = json.loads(files[name])
        except (ValueError, RecursionError) as exc:
            raise bad(name, f"not JSON ({_one_line(exc)})") from None
        if not isinstance(parsed[name], dict):
            raise bad(name, "not a JSON object")
    record, status = parsed["config.json"], parsed["status.json"]
    if record.get("run_id") != run_id:
        raise bad("config.json", f"names run {record.get('run_id')!r}, not its folder {run_id}")
    try:
        config = TrainConfig.from_dict(record["config"]).resolved()
        configured_id = config.run_id()
    except Exception as exc:  # anything a foreign file may hold
        raise bad("config.json", f"holds no valid configuration ({_one_line(exc)})") from None
    if configured_id != run_id:
        raise bad("config.json", f"its configuration is that of run {configured_id}, not {run_id}")
    state, epochs = status.get("state"), config.epochs
    if state not in FINAL_STATES:
        raise bad("status.json", f"state {state!r}: not a finished or diverged run")
    if status.get("run_id", run_id) != run_id:
        raise bad("status.json", f"names run {status.get('run_id')!r}, not {run_id}")
    if ("epochs" in status or state == "finished") and status.get("epochs") != epochs:
        raise bad("status.json", f"says {status.get('epochs')!r} epochs, its configuration {epochs}")
    expected = epochs if state == "finished" else status.get("diverged_epoch")
    if not isinstance(expected, int) or isinstance(expected, bool) or not 1 <= expected <= epochs:
        raise bad("status.json", f"diverged_epoch {expected!r} is not an epoch of 1..{epochs}")
    try:
        history = pd.read_csv(io.BytesIO(files["metrics.csv"]))
    except Exception as exc:  # anything a foreign file may hold
        raise bad("metrics.csv", f"not a metrics table ({_one_line(exc)})") from None
    missing = HISTORY_COLUMNS - set(history.columns)
    if missing:
        raise bad("metrics.csv", f"lacks the columns {', '.join(sorted(missing))}")
    if len(history) != expected:
        raise bad("metrics.csv", f"status says {state} after {expected} epochs (configured: {epochs}) "
                                 f"but metrics.csv has {len(history)} rows")
    if list(history.epoch) != list(range(1, len(history) + 1)):
        raise bad("metrics.csv", f"epochs are not numbered 1..{len(history)}")
    _check_values(history, state == "diverged", bad)
    losses = history[["train_loss", "test_loss"]].to_numpy(dtype=float)
    if state == "diverged" and np.isfinite(losses[-1]).all():
        raise bad("metrics.csv", f"status says diverged in epoch {expected} but its losses are finite")
    return record, status, history


def import_records(source: str | Path, runs_dir: str | Path, replace: bool = False) -> list[str]:
    """Add the finished or diverged runs in `source` (a folder of run folders, or an archive made by
    `export_records`) to `runs_dir`; returns the run ids added.

    Only the record files are read, and nothing is written into the source. Every record is checked
    against its own configuration (`_check_record`: config.json names its folder and hashes to it,
    one metrics row per epoch up to the status's, values in range) before any is added; if one
    fails, none is. A record already stored is skipped; a different final one there is refused
    unless `replace`, which replaces that run folder (its checkpoint included). RunError (one line
    naming the source and the member) for every fault.
    """
    source, runs_dir = Path(source), Path(runs_dir)
    archive = source.is_file()
    if not (archive or source.is_dir()):
        raise RunError(f"no run records at {source}: give a folder of run folders or a .tar.gz")
    records = _read_archive(source) if archive else _read_folder(source)

    def where(run_id: str, name: str = "") -> str:
        return f"{source} member {run_id}/{name}" if archive else str(source / run_id / name)

    todo = []
    for run_id, files in sorted(records.items()):
        record, status, history = _check_record(
            run_id, files, lambda name, reason: _refused(where(run_id, name), reason))
        target = runs_dir / run_id
        if target.exists() or target.is_symlink():
            if not target.is_dir() or target.is_symlink():
                raise RunError(f"{target} is not a run folder; move it away to import {where(run_id)}")
            if _is_locked(target):
                raise RunError(f"{target} is being trained by another process; import "
                               f"{where(run_id)} once it has stopped")
            try:
                stored = load_run(target)
            except RunError as exc:  # the store's own run is damaged
                if not replace:
                    raise RunError(f"{exc}; or import with replace (--replace) to put "
                                   f"{where(run_id)} in its place") from None
                stored = None
            if stored is not None and stored.state in FINAL_STATES:
                if ((stored.config, stored.status) == (record, status)
                        and stored.history.reset_index(drop=True).equals(history)):
                    continue  # the same record
                if not replace:
                    raise RunError(f"{where(run_id)} differs from the record of the same run in "
                                   f"{target}; import with replace (--replace) to replace the "
                                   f"stored one, or into another runs folder")
        todo.append((run_id, files))

    staged = []
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for run_id, files in todo:  # all written before any is moved into place
            staging = _staging(runs_dir, run_id, "import")
            staged.append((staging, runs_dir / run_id))
            staging.mkdir()
            for name in RECORD_FILES:
                (staging / name).write_bytes(files[name])
        for staging, target in staged:
            _move_into_place(staging, target)
    except OSError as exc:
        for staging, _ in staged:
            shutil.rmtree(staging, ignore_errors=True)
        raise RunError(f"could not write to {runs_dir} ({_why(exc)}); free space or fix "
                       f"permissions, then import {source} again") from None
    return [run_id for run_id, _ in todo]


__all__ = ["export_records", "import_records"]
