"""The run store: one directory per configuration, found again by a hash of that configuration.

    runs/<loss>-<subset><K>-wrn<depth>-<width>-<hash12>/
        config.json   the resolved configuration, the class names and indices, the run id
        metrics.csv   one row per finished epoch (train.py lists the columns); absent before epoch 1
        status.json   {"state": "running" | "interrupted" | "failed" | "finished" | "diverged", ...}
        checkpoint.pt model, optimizer, history, RNG states and config.json's record
        .lock         held (flock) by the one process that trains the run

Every file is written atomically (temporary file + rename), so a kill at any moment leaves each
file complete. Nothing read back is trusted (`load_run`); a partial history is never reported as
finished.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..core.config import TrainConfig
from ..core.data import Cifar100, DataError, content_fingerprint, load_cifar100
from ..provenance import atomic_write_text, describe_device
from ..core.train import RunDiverged, RunError, Trainer, load_checkpoint

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
    try:
        state = load_checkpoint(run_dir / "checkpoint.pt")
        return {"history": list(state["history"]), "record": state.get("record")}
    except Exception:
        return None


def _is_locked(run_dir: Path) -> bool:
    """True while a process holds the run's training lock."""
    try:
        with open(run_dir / ".lock", "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released on close
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False


def load_run(run_dir: str | Path) -> Run:
    """Read and check a run directory (any state) without training: the folder name against the
    config hash, the status against the metric rows. Rebuilds config.json or metrics.csv from the
    checkpoint when they are damaged and it holds them; RunError (one line: the folder and the fix)
    when a finished or diverged run's files disagree and cannot be rebuilt. A 'running' run whose
    lock nobody holds is reported as 'interrupted'."""
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
    elif not status:
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


class RunStore:
    """The runs of one folder: where a configuration's run lives, and what is stored there.

    `data` (CIFAR-100 from data_root, see data.py) is loaded when a run first needs training, unless
    given. Unverified data (a stand-in, a pack that is not the real data) gets run ids of its own,
    tied to its content. progress: the display of runs trained here (progress.py)."""

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


__all__ = ["FINAL_STATES", "HISTORY_COLUMNS", "RECORD_FILES", "Run", "RunError", "RunInterrupted",
           "RunStore", "load_run"]
