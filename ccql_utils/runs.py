"""The run store: one directory per configuration, found again by a hash of that configuration.

    runs/<loss>-<subset><K>-wrn<depth>-<width>-<hash12>/
        config.json   the resolved configuration, the class names and indices, the run id
        metrics.csv   one row per finished epoch (train.py lists the columns); absent before epoch 1
        status.json   {"state": "running" | "interrupted" | "failed" | "finished" | "diverged", ...}
        checkpoint.pt model, optimizer, history, RNG states and config.json's record
        .lock         held (flock) by the one process that trains the run

`RunStore(runs_dir, ...)` reads (`load`) or obtains (`get`: stored if finished or diverged, else
resumed from its checkpoint or trained) the run of a configuration. Every file is written
atomically (temporary file + rename), so a kill at any moment leaves each file complete. Nothing
read back is trusted: `load_run` checks a run's files against each other (folder name and config
hash, status against the metric rows), rebuilds what the checkpoint holds, and raises `RunError`
with the folder and the fix for what it cannot rebuild; a partial history is never reported as
finished. Finished runs need only config.json, metrics.csv and status.json (`export_records` /
`import_records` move those between machines: train on a GPU node, draw on a laptop).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import io
import json
import lzma
import os
import shutil
import socket
import stat
import sys
import tarfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .config import TrainConfig
from .data import Cifar100, DataError, content_fingerprint, load_cifar100
from .progress import progress_mode
from .provenance import atomic_open, atomic_write_text, describe_device
from .stacked import StackedTrainer, plan_stacks
from .train import RunDiverged, RunError, Trainer, load_checkpoint

FINAL_STATES = ("finished", "diverged")
RECORD_FILES = ("config.json", "metrics.csv", "status.json")  # all a finished run needs
HISTORY_COLUMNS = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc"}  # in every metrics.csv


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM through the CLI) while a run trained; the message says how to resume."""


@dataclass
class Run:
    """A stored run: its directory, config.json's record, status and history (one row per epoch)."""

    run_dir: Path
    config: dict[str, Any]
    status: dict[str, Any]
    history: pd.DataFrame

    @property
    def state(self) -> str:
        return self.status.get("state", "absent")

    @property
    def finished(self) -> bool:
        return self.state == "finished"

    @property
    def diverged(self) -> bool:
        return self.state == "diverged"

    @property
    def class_names(self) -> list[str]:
        return list(self.config.get("class_names", []))

    def final(self) -> dict[str, Any]:
        """The last epoch's row as a dict (empty if no epoch finished)."""
        return {} if self.history.empty else self.history.iloc[-1].to_dict()

    def describe(self) -> str:
        """'finished', 'diverged at epoch 3 (lr 0.1)', 'interrupted after epoch 4 of 50', 'absent'."""
        if self.diverged:
            return f"diverged at epoch {self.status.get('diverged_epoch')} (lr {self.config.get('config', {}).get('lr')})"
        if self.state in ("finished", "absent"):
            return self.state
        return f"{self.state} after epoch {len(self.history)} of {self.status.get('epochs', '?')}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing or damaged."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_history(path: Path) -> pd.DataFrame | None:
    """metrics.csv as a frame (empty when absent or blank); None when it is damaged."""
    if not path.exists() or path.stat().st_size <= 1:
        return pd.DataFrame()
    try:
        history = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return None
    if not HISTORY_COLUMNS <= set(history.columns) or list(history.epoch) != list(range(1, len(history) + 1)):
        return None
    return history


def _record_matches_folder(record: dict | None, run_dir: Path) -> bool:
    """config.json names this folder and its configuration hashes to the folder's id."""
    try:
        return (record["run_id"] == run_dir.name
                and TrainConfig.from_dict(record["config"]).run_id() == run_dir.name)
    except (KeyError, TypeError, ValueError):
        return False


def _read_checkpoint(run_dir: Path) -> dict[str, Any] | None:
    """The checkpoint's history and record, or None if absent, unreadable or holding anything but
    tensors and plain values (loaded with weights_only=True: a planted pickle never runs)."""
    path = run_dir / "checkpoint.pt"
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
        return {"history": list(state["history"]), "record": state.get("record")}
    except Exception:
        return None


def _is_locked(run_dir: Path) -> bool:
    """True while a process holds the run's training lock."""
    try:
        with open(run_dir / ".lock", "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def load_run(run_dir: str | Path) -> Run:
    """Read and check a run directory (any state) without training.

    Rebuilds config.json or metrics.csv from the checkpoint when they are damaged and the
    checkpoint holds them; raises RunError (one line: the folder and the fix) when a finished or
    diverged run's files disagree and cannot be rebuilt. A 'running' run whose lock nobody holds
    is reported as 'interrupted'.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return Run(run_dir, {}, {}, pd.DataFrame())
    status = _read_json(run_dir / "status.json") or {}
    record = _read_json(run_dir / "config.json")
    history = _read_history(run_dir / "metrics.csv")
    state = status.get("state")
    checkpoint = None
    fix = "delete the folder and rerun to train the run again"

    if not _record_matches_folder(record, run_dir):
        checkpoint = _read_checkpoint(run_dir)
        if checkpoint and _record_matches_folder(checkpoint["record"], run_dir):
            record = checkpoint["record"]
            _write_json(run_dir / "config.json", record)
        elif state in FINAL_STATES:
            raise RunError(f"{run_dir}: config.json is missing, damaged or of another configuration "
                           f"and no readable checkpoint holds it; {fix}")
        else:
            record = {}
    if state in FINAL_STATES:
        expected = status.get("epochs") if state == "finished" else status.get("diverged_epoch")
        if history is None or len(history) != expected:
            checkpoint = checkpoint or _read_checkpoint(run_dir)
            if state == "finished" and checkpoint and len(checkpoint["history"]) == expected:
                history = pd.DataFrame(checkpoint["history"])
                atomic_write_text(run_dir / "metrics.csv", history.to_csv(index=False))
                history = _read_history(run_dir / "metrics.csv")
            else:
                found = "is damaged" if history is None else f"has {len(history)} rows"
                raise RunError(f"{run_dir}: status says {state} after {expected} epochs but "
                               f"metrics.csv {found} and no readable checkpoint holds the "
                               f"history; {fix}")
    elif state == "running" and not _is_locked(run_dir):
        status = {**status, "state": "interrupted"}
    elif not status and run_dir.exists():
        status = {"state": "interrupted"}
    return Run(run_dir, record or {}, status, history if history is not None else pd.DataFrame())


@contextlib.contextmanager
def _exclusive_lock(path: Path, quiet: bool, wait: bool = True):
    """Hold an exclusive flock on `path` (creating its folder); yields True once held. If another
    process holds it: wait (saying so), or with wait=False yield False at once. A folder that
    cannot be written is a RunError saying so."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:
        raise RunError(f"cannot write to {path.parent} ({exc.strerror or exc}); choose a writable "
                       f"runs folder (--runs-dir / runs_dir)") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            if not quiet:
                print(f"waiting for another process that is training {path.parent.name} ...",
                      file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _RunFiles:
    """The files a run being trained keeps up to date: config.json, metrics.csv, status.json."""

    def __init__(self, run_dir: Path, config: TrainConfig):
        self.run_dir = run_dir
        self.status = {"state": "running", "run_id": run_dir.name, "pid": os.getpid(),
                       "host": socket.gethostname(), "started": _now(), "epochs_completed": 0,
                       "epochs": config.epochs}

    def write_status(self, **changes) -> None:
        self.status.update(changes, updated=_now())
        _write_json(self.run_dir / "status.json", self.status)

    def on_epoch(self, history: list[dict]) -> None:
        atomic_write_text(self.run_dir / "metrics.csv", pd.DataFrame(history).to_csv(index=False))
        self.write_status(epochs_completed=len(history))

    def start(self, trainer: Trainer, **execution) -> None:
        """config.json and a 'running' status; execution: how it runs (e.g. stacked_runs=N)."""
        _write_json(self.run_dir / "config.json", {
            **trainer.record, "device": str(trainer.device), "compile": trainer.config.compile,
            "precision_used": "bf16" if trainer.use_bf16 else "fp32"})
        if trainer.history:
            self.on_epoch(trainer.history)  # metrics.csv again as the checkpoint has it
        else:
            (self.run_dir / "metrics.csv").unlink(missing_ok=True)  # no epoch yet: no metrics file
        import torch
        self.write_status(resumed_from_epoch=len(trainer.history), epochs_completed=len(trainer.history),
                          device=describe_device(trainer.device), torch=torch.__version__, **execution)

    def diverged(self, trainer: Trainer, exc: RunDiverged) -> None:
        self.write_status(state="diverged", diverged_epoch=len(trainer.history), reason=str(exc))
        print(f"run {self.run_dir.name} diverged: {exc}", file=sys.stderr)

    def stopped(self, trainer: Trainer, exc: BaseException) -> None:
        """Status 'interrupted' (Ctrl-C, SIGTERM) or 'failed', with the epoch it resumes from."""
        interrupted = isinstance(exc, KeyboardInterrupt)
        with contextlib.suppress(OSError):  # the disk may be full: the status is best effort
            self.write_status(state="interrupted" if interrupted else "failed",
                              reason=type(exc).__name__ if interrupted else str(exc),
                              resume_from_epoch=trainer.checkpointed_epochs)

    def finished(self, trainer: Trainer) -> None:
        self.write_status(state="finished", epochs_completed=len(trainer.history), finished=_now())


def _interrupted(trainers: list[Trainer], run_dirs: list[Path]) -> RunInterrupted:
    names = ", ".join(d.name for d in run_dirs)
    resume = min(t.checkpointed_epochs for t in trainers)
    return RunInterrupted(f"interrupted: run{'s' if len(run_dirs) > 1 else ''} {names} stopped in "
                          f"epoch {len(trainers[0].history) + 1}; rerun the same command to resume "
                          f"from epoch {resume + 1}")


class RunStore:
    """The runs of one folder, and how to obtain them.

    data_root / verify_data say where CIFAR-100 comes from (see data.py); it is loaded once, on
    the first run that needs training (or pass `data` already loaded). Unverified data (a
    stand-in, a pack that is not the real data) gets run ids of its own, tied to its content.
    progress: the per-epoch display (progress.py: True/None a bar in terminals and notebooks,
    else lines; 'lines'; False: silent).
    """

    def __init__(self, runs_dir: str | Path = "runs", data_root: str | os.PathLike | None = None,
                 verify_data: bool = True, data: Cifar100 | None = None,
                 progress: bool | None = None):
        self.runs_dir = Path(runs_dir)
        self.data_root = data_root
        self.verify_data = data.verified if data is not None else verify_data
        self._data = data
        self.progress = progress

    @property
    def data(self) -> Cifar100:
        if self._data is None:
            data = load_cifar100(self.data_root, verify=self.verify_data)
            if self.verify_data and not data.verified:  # a packed subset of a stand-in
                raise DataError(f"{data.folder} does not hold CIFAR-100's published images (checked "
                                f"image by image); pass --unverified-data (verify_data=False) to "
                                f"train on it under run ids of its own")
            self._data = data
        return self._data

    def resolve(self, config: TrainConfig) -> TrainConfig:
        """The validated config as this store identifies it (tagged when the data is unverified)."""
        config = config.resolved()
        if self.verify_data:
            return config
        source = self._data.folder if self._data is not None else self.data_root
        return replace(config, dataset=f"unverified-{content_fingerprint(source)}").resolved()

    def path(self, config: TrainConfig) -> Path:
        """Where the run of `config` lives (it may not exist yet)."""
        return self.runs_dir / self.resolve(config).run_id()

    def load(self, config: TrainConfig) -> Run:
        """The stored run of `config` in whatever state it is (state 'absent' if none); never trains."""
        return load_run(self.path(config))

    def get(self, config: TrainConfig, label: str | None = None) -> Run:
        """The run of `config`: stored if finished or diverged, else resumed or trained now.

        A diverged run is returned with `diverged` True and is never reported as finished.
        Raises RunError for damaged runs and failed writes, KeyboardInterrupt on Ctrl-C (the
        run is marked 'interrupted' and resumes on the next call).
        """
        config = self.resolve(config)
        run_dir = self.runs_dir / config.run_id()
        stored = load_run(run_dir)
        if stored.state in FINAL_STATES:
            return stored
        data = self.data  # before creating anything, so a data error leaves no empty run folder
        with _exclusive_lock(run_dir / ".lock", progress_mode(self.progress) == "off"):
            return self._train_locked(config, run_dir, data, label)

    def _train_locked(self, config: TrainConfig, run_dir: Path, data: Cifar100, label=None) -> Run:
        stored = load_run(run_dir)  # another process may have finished it meanwhile
        if stored.state in FINAL_STATES:
            return stored
        files = _RunFiles(run_dir, config)
        trainer = Trainer(config, data, run_dir, progress=self.progress, name=label,
                          on_epoch=files.on_epoch)
        self._train_one(trainer, files)
        return load_run(run_dir)

    @staticmethod
    def _train_one(trainer: Trainer, files: _RunFiles) -> None:
        """Train one run (its lock held), keeping its files up to date."""
        files.start(trainer)
        try:
            trainer.run()
        except RunDiverged as exc:
            files.diverged(trainer, exc)
            return
        except BaseException as exc:
            files.stopped(trainer, exc)
            if isinstance(exc, KeyboardInterrupt):
                raise _interrupted([trainer], [files.run_dir]) from None
            raise
        files.finished(trainer)

    def get_stacked(self, configs: dict[str, TrainConfig], name: str = "") -> dict[str, Run]:
        """`get` for runs that can be stacked (stacked.stack_key equal), trained as one program
        (stacked.py) when two or more need training. Runs that another process is training are
        left to it (and waited for); runs at different epochs form separate stacks."""
        resolved = {label: self.resolve(c) for label, c in configs.items()}
        todo = {label: c for label, c in resolved.items()
                if load_run(self.runs_dir / c.run_id()).state not in FINAL_STATES}
        if len(todo) > 1:
            data = self.data
            quiet = progress_mode(self.progress) == "off"
            with contextlib.ExitStack() as locks:
                by_epoch: dict[int, list] = {}
                for label, c in todo.items():
                    run_dir = self.runs_dir / c.run_id()
                    if not locks.enter_context(_exclusive_lock(run_dir / ".lock", quiet, wait=False)):
                        continue  # another process trains it; `get` below waits for it
                    if load_run(run_dir).state in FINAL_STATES:
                        continue
                    files = _RunFiles(run_dir, c)
                    trainer = Trainer(c, data, run_dir, progress=False, name=label, on_epoch=files.on_epoch)
                    by_epoch.setdefault(len(trainer.history), []).append((trainer, files))
                for group in by_epoch.values():
                    self._train_stack(group, name)
        return {label: self.get(c, label) for label, c in resolved.items()}

    def _train_stack(self, group: list, name: str) -> None:
        if len(group) == 1:  # alone in its epoch group: trained plainly, with its lock still held
            trainer, files = group[0]
            trainer.progress = self.progress
            self._train_one(trainer, files)
            return
        trainers, files = [t for t, _ in group], [f for _, f in group]
        for t, f in group:
            f.start(t, stacked_runs=len(group))
        stack = None
        try:
            stack = StackedTrainer(trainers, self.progress, f"[{name}] {len(group)} runs stacked",
                                   on_diverged=lambda i, exc: files[i].diverged(trainers[i], exc))
            stack.run()
        except BaseException as exc:
            live = [i for i in range(len(group)) if stack is None or stack.live[i]]
            for i in live:
                files[i].stopped(trainers[i], exc)
            if isinstance(exc, KeyboardInterrupt):
                raise _interrupted([trainers[i] for i in live], [files[i].run_dir for i in live]) from None
            raise
        for i in range(len(group)):
            if stack.live[i]:
                files[i].finished(trainers[i])

    def get_all(self, configs: dict[str, TrainConfig], name: str = "",
                stack: int | None = 1) -> dict[str, Run]:
        """`get` for each labelled config; data is loaded once, only if one needs training.

        stack: at most this many runs that can be stacked train together as one program
        (stacked.py); None: `stacked.default_stack` (32 small models on a GPU, else 1). Says for
        each run whether it is read from the store or trained (n of N)."""
        stored = {label: self.load(config) for label, config in configs.items()}
        todo = {label: c for label, c in configs.items() if stored[label].state not in FINAL_STATES}
        stack_of = {label: group for group in plan_stacks(todo, stack) for label in group}
        position = {label: n for n, label in enumerate(configs, 1)}
        runs = {label: run for label, run in stored.items() if label not in todo}
        for label, run in stored.items():
            if progress_mode(self.progress) != "off":
                doing = ("training" if run.state == "absent" else f"{run.describe()}, " +
                         ("read from the store" if label not in todo else "resuming"))
                together = len(stack_of.get(label, ()))
                print(f"[{name}] run {position[label]}/{len(configs)} {label}: {doing}"
                      f"{f' (stack of {together})' if together > 1 else ''} ({run.run_dir.name})",
                      file=sys.stderr, flush=True)
            if label not in runs:  # a lone run goes through `get`, inside get_stacked
                runs.update(self.get_stacked({g: configs[g] for g in stack_of[label]}, name))
        return {label: runs[label] for label in configs}


# ----------------------------------------------------------------------------- records between machines
MAX_RECORD_FILE_BYTES = 64 * 2**20  # per record file (a 200-epoch metrics.csv is ~40 KB)
IMPORT_FIX = "re-export it on the machine that trained it"


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _inside(path: Path, folder: Path) -> bool:
    """`path` is `folder` or lies under it (both resolved)."""
    return path == folder or folder in path.parents


def _check_export_destination(destination: Path, run_dirs: list[Path], archive: bool) -> None:
    """Refuse a destination that would write into the runs being exported or over something that is
    not what it claims to be (an archive name that is a folder, a folder name that is a file)."""
    if archive and destination.is_dir():
        raise RunError(f"{destination} is a folder; name a new archive file (e.g. records.tar.gz)")
    if not archive and destination.exists() and not destination.is_dir():
        raise RunError(f"{destination} is a file, not a folder; name a folder, or an archive "
                       f"ending .tar.gz")
    where = destination.resolve()
    for run_dir in run_dirs:
        run_dir = run_dir.resolve()
        runs_folder = run_dir.parent
        if _inside(where, run_dir) or (not archive and runs_folder in (where, where.parent)):
            raise RunError(f"{destination} is in (or is) the runs folder {runs_folder} being "
                           f"exported; export to a folder or archive outside it")


def _export_failed(destination: Path, exc: OSError, kept: str) -> RunError:
    return RunError(f"could not write {destination} ({exc.strerror or _one_line(exc)}); {kept}: free "
                    f"space or fix permissions, then export again")


def _write_archive(destination: Path, runs: list[Run]) -> None:
    """The records as a .tar.gz, written under a temporary name and renamed: a kill or a full disk
    leaves the previous archive (or none), never a partial one under `destination`."""
    existed = destination.exists()
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(destination) as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for run in runs:
                for name in RECORD_FILES:
                    path = run.run_dir / name
                    data = path.read_bytes()
                    member = tarfile.TarInfo(f"{run.run_dir.name}/{name}")
                    member.size, member.mode, member.mtime = len(data), 0o644, int(path.stat().st_mtime)
                    tar.addfile(member, io.BytesIO(data))
    except OSError as exc:
        raise _export_failed(destination, exc, "the previous archive is intact" if existed
                             else "no archive was written") from None


def _write_folders(destination: Path, runs: list[Run]) -> None:
    """Each record as a folder, written under a temporary name and renamed into place (replacing
    an earlier export's): a kill leaves each run folder complete (old or new) or absent, never a
    partial one."""
    for run in runs:  # a folder of a runs store (a checkpoint in it) is not replaced by a record
        target = destination / run.run_dir.name
        if target.is_dir() and {p.name for p in target.iterdir()} - set(RECORD_FILES):
            raise RunError(f"{target} holds more than a run record (a runs folder's run?); export "
                           f"to a folder of records, and add them to a runs folder with import")
    pid = os.getpid()
    for run in runs:
        target = destination / run.run_dir.name
        staging = destination / f".{target.name}.export-{pid}.tmp"
        try:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for name in RECORD_FILES:
                shutil.copyfile(run.run_dir / name, staging / name)
            _move_into_place(staging, target)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise _export_failed(target, exc, "the folders already written are complete") from None


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the complete folder `staging` to `target`, replacing what is there (moved aside
    first, then removed): at every moment `target` is the old folder, the new one, or absent."""
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.replaced-{os.getpid()}.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(target, old)
        os.rename(staging, target)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.rename(staging, target)


def export_records(run_dirs: Iterable[str | Path], destination: str | Path) -> list[str]:
    """Copy the records (config, metrics, status; no checkpoints) of finished or diverged runs to
    `destination`: a folder, or a .tar.gz archive. Returns the run ids exported; others skipped,
    as are folders starting with '.' (an interrupted import's or export's temporary ones).

    Written atomically (see `_write_archive`, `_write_folders`). RunError (one line) for a
    destination inside the runs being exported, an archive name that is a folder, a folder name
    that is a file, and a failed write (full disk, no permission)."""
    run_dirs = [Path(d) for d in run_dirs if not Path(d).name.startswith(".")]
    destination = Path(destination)
    archive = destination.name.endswith((".tar.gz", ".tgz"))
    _check_export_destination(destination, run_dirs, archive)
    final = [run for run in map(load_run, run_dirs) if run.state in FINAL_STATES]
    (_write_archive if archive else _write_folders)(destination, final)
    return [r.run_dir.name for r in final]


class _BadRecord(ValueError):
    """What is wrong with one file of a record: `args` = (file name, reason)."""


def _archive_member(archive: Path, member: tarfile.TarInfo) -> tuple[str, str | None]:
    """(run id, file name) of an archive member, (run id, None) for a run folder's own entry;
    a RunError for anything an exported archive does not hold (links, devices, paths that
    leave the folder, other files, oversized files), judged from its header before reading."""
    name = member.name[:-1] if member.isdir() and member.name.endswith("/") else member.name
    parts = name.split("/")
    refuse = None
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
    if refuse:
        raise RunError(f"{archive} member {_one_line(member.name)!r}: {refuse}; nothing imported "
                       f"({IMPORT_FIX})")
    return parts[0], parts[1]


def _read_archive(archive: Path) -> dict[str, dict[str, bytes]]:
    """run id -> {record file: content} of an archive made by `export_records`, read in memory
    (nothing is extracted). The whole compressed stream is read to its end, so a truncated
    archive fails its length and checksum checks even where the tar headers look complete."""
    records: dict[str, dict[str, bytes]] = {}
    last = None
    try:
        tar = tarfile.open(archive, "r:*")
    except OSError as exc:
        if exc.errno is not None:
            raise RunError(f"{archive} cannot be read ({exc.strerror or _one_line(exc)})") from None
        tar = None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError):
        tar = None
    if tar is None:
        raise RunError(f"{archive}: not a tar archive (.tar.gz, .tgz or .tar) of run records; "
                       f"nothing imported ({IMPORT_FIX})")
    try:
        with tar:
            for member in tar:
                run_id, name = _archive_member(archive, member)
                last = member.name
                if name is None:
                    records.setdefault(run_id, {})
                    continue
                files = records.setdefault(run_id, {})
                if name in files:
                    raise RunError(f"{archive} member {run_id}/{name} appears twice; nothing "
                                   f"imported ({IMPORT_FIX})")
                files[name] = tar.extractfile(member).read()
            while tar.fileobj.read(1 << 20):
                pass
    except RunError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        after = f" after member {last}" if last else ""
        raise RunError(f"{archive}: not a complete archive of run records{after} "
                       f"({_one_line(exc) or type(exc).__name__}); nothing imported "
                       f"({IMPORT_FIX})") from None
    return records


def _read_folder(source: Path) -> dict[str, dict[str, bytes]]:
    """run id -> {record file: content} of a folder of run folders (others' files are ignored,
    so are folders starting with '.', such as an interrupted export's temporary ones); record
    files must be regular files within the size cap."""
    records: dict[str, dict[str, bytes]] = {}
    for folder in sorted(source.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        if folder.is_symlink():
            raise RunError(f"{folder}: a link to a folder, not a run record; copy the record "
                           f"itself ({IMPORT_FIX})")
        files = records[folder.name] = {}
        for name in RECORD_FILES:
            path = folder / name
            try:
                info = path.lstat()
                if not stat.S_ISREG(info.st_mode):
                    raise RunError(f"{path}: not a regular file (a link?); nothing imported "
                                   f"({IMPORT_FIX})")
                if info.st_size > MAX_RECORD_FILE_BYTES:
                    raise RunError(f"{path}: {info.st_size} bytes, more than a record file may hold "
                                   f"({MAX_RECORD_FILE_BYTES}); nothing imported")
                files[name] = path.read_bytes()
            except FileNotFoundError:
                continue  # reported as missing by `_check_record`
            except OSError as exc:
                raise RunError(f"{path}: cannot be read ({exc.strerror or _one_line(exc)})") from None
    return records


def _check_values(history: pd.DataFrame, diverged: bool) -> None:
    """Losses finite and >= 0, accuracies in [0, 1], lr and seconds finite and >= 0; train_clean_*
    may be empty (NaN) in epochs where the clean pass did not run. In a diverged run's last row a
    loss may also be NaN or +inf, an accuracy NaN (the row that recorded the divergence)."""
    import numpy as np
    for column in history.columns:
        series = history[column]
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise _BadRecord("metrics.csv", f"column {column} is not numeric")
        values = series.to_numpy(dtype=float)
        if column.endswith(("_loss", "_loss_norm")):
            ok, relaxed = np.isfinite(values) & (values >= 0), np.isnan(values) | (values >= 0)
        elif column.endswith("_acc"):
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
            raise _BadRecord("metrics.csv", f"{column} is {values[row]} in epoch {row + 1}, "
                                            f"out of range")


def _check_record(run_id: str, files: dict[str, bytes]) -> tuple[dict, dict, pd.DataFrame]:
    """(config.json's record, status, history) of a record that is consistent with its own
    configuration (see `import_records`); _BadRecord(file, reason) for the first fault found."""
    import numpy as np
    for name in RECORD_FILES:
        if name not in files:
            raise _BadRecord(name, "missing (a record is config.json, metrics.csv and status.json)")
    parsed = {}
    for name in ("config.json", "status.json"):
        try:
            parsed[name] = json.loads(files[name])
        except (ValueError, RecursionError) as exc:
            raise _BadRecord(name, f"not JSON ({_one_line(exc)})") from None
        if not isinstance(parsed[name], dict):
            raise _BadRecord(name, "not a JSON object")
    record, status = parsed["config.json"], parsed["status.json"]
    if record.get("run_id") != run_id:
        raise _BadRecord("config.json", f"names run {record.get('run_id')!r}, not its folder {run_id}")
    try:
        config = TrainConfig.from_dict(record["config"]).resolved()
        configured_id = config.run_id()
    except Exception as exc:  # anything a foreign file may hold
        raise _BadRecord("config.json", f"holds no valid configuration ({_one_line(exc)})") from None
    if configured_id != run_id:
        raise _BadRecord("config.json", f"its configuration is that of run {configured_id}, not "
                                        f"{run_id}")
    state, epochs = status.get("state"), config.epochs
    if state not in FINAL_STATES:
        raise _BadRecord("status.json", f"state {state!r}: not a finished or diverged run")
    if status.get("run_id", run_id) != run_id:
        raise _BadRecord("status.json", f"names run {status.get('run_id')!r}, not {run_id}")
    if "epochs" in status or state == "finished":
        if status.get("epochs") != epochs:
            raise _BadRecord("status.json", f"says {status.get('epochs')!r} epochs, its "
                                            f"configuration {epochs}")
    if state == "finished":
        expected = epochs
    else:
        expected = status.get("diverged_epoch")
        if not isinstance(expected, int) or isinstance(expected, bool) or not 1 <= expected <= epochs:
            raise _BadRecord("status.json", f"diverged_epoch {expected!r} is not an epoch of "
                                            f"1..{epochs}")
    try:
        history = pd.read_csv(io.BytesIO(files["metrics.csv"]))
    except Exception as exc:  # anything a foreign file may hold
        raise _BadRecord("metrics.csv", f"not a metrics table ({_one_line(exc)})") from None
    missing = HISTORY_COLUMNS - set(history.columns)
    if missing:
        raise _BadRecord("metrics.csv", f"lacks the columns {', '.join(sorted(missing))}")
    if len(history) != expected:
        raise _BadRecord("metrics.csv", f"status says {state} after {expected} epochs (configured: "
                                        f"{epochs}) but metrics.csv has {len(history)} rows")
    if list(history.epoch) != list(range(1, len(history) + 1)):
        raise _BadRecord("metrics.csv", f"epochs are not numbered 1..{len(history)}")
    _check_values(history, diverged=state == "diverged")
    if state == "diverged":
        losses = history[["train_loss", "test_loss"]].to_numpy(dtype=float)
        if np.isfinite(losses[-1]).all():
            raise _BadRecord("metrics.csv", f"status says diverged in epoch {expected} but its "
                                            f"losses are finite")
    return record, status, history


def _same_record(stored: Run, record: dict, status: dict, history: pd.DataFrame) -> bool:
    return (stored.config == record and stored.status == status
            and stored.history.reset_index(drop=True).equals(history))


def import_records(source: str | Path, runs_dir: str | Path, replace: bool = False) -> list[str]:
    """Add the finished or diverged runs in `source` (a folder of run folders, or an archive made by
    `export_records`) to `runs_dir`. Returns the run ids added.

    Only config.json, metrics.csv and status.json are read (a source's checkpoints never; nothing
    is written into the source). Every record is checked against its own configuration before
    any is added, and if one fails nothing is: config.json names its folder and its
    configuration hashes to that id; a finished run has one row per configured epoch, a diverged
    one a row per epoch up to `diverged_epoch` whose last row has a non-finite loss; epochs
    numbered 1..N; losses finite and >= 0, accuracies in [0, 1]. A record already in the store
    is skipped; a different final one there is refused (RunError naming both) unless `replace`,
    which replaces that run folder (its checkpoint included). Each run folder appears complete
    (renamed into place). RunError (one line naming the source and the member) for every fault.
    """
    source, runs_dir = Path(source), Path(runs_dir)
    if source.is_file():
        records = _read_archive(source)

        def where(run_id: str, name: str = "") -> str:
            return f"{source} member {run_id}/{name}"
    elif source.is_dir():
        records = _read_folder(source)

        def where(run_id: str, name: str = "") -> str:
            return str(source / run_id / name)
    else:
        raise RunError(f"no run records at {source}: give a folder of run folders or a .tar.gz")

    todo = []
    for run_id, files in sorted(records.items()):
        try:
            record, status, history = _check_record(run_id, files)
        except _BadRecord as bad:
            name, reason = bad.args
            raise RunError(f"{where(run_id, name)}: {reason}; nothing imported "
                           f"({IMPORT_FIX})") from None
        target = runs_dir / run_id
        if target.exists() or target.is_symlink():
            if not target.is_dir() or target.is_symlink():
                raise RunError(f"{target} is not a run folder; move it away to import "
                               f"{where(run_id)}")
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
                if _same_record(stored, record, status, history):
                    continue
                if not replace:
                    raise RunError(f"{where(run_id)} differs from the record of the same run in "
                                   f"{target}; import with replace (--replace) to replace the "
                                   f"stored one, or into another runs folder")
        todo.append((run_id, files))

    staged = []
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        for run_id, files in todo:
            staging = runs_dir / f".{run_id}.import-{os.getpid()}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            staged.append((staging, runs_dir / run_id))
            for name in RECORD_FILES:
                (staging / name).write_bytes(files[name])
        for staging, target in staged:
            _move_into_place(staging, target)
    except OSError as exc:
        for staging, _ in staged:
            shutil.rmtree(staging, ignore_errors=True)
        raise RunError(f"could not write to {runs_dir} ({exc.strerror or _one_line(exc)}); "
                       f"free space or fix permissions, then import {source} again") from None
    return [run_id for run_id, _ in todo]


__all__ = ["FINAL_STATES", "Run", "RunError", "RunInterrupted", "RunStore", "export_records", "import_records",
           "load_run"]
