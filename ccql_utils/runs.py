"""The run store: one directory per configuration, found again by a hash of that configuration.

    runs/<loss>-<subset><K>-wrn<depth>-<width>-<hash12>/
        config.json   the resolved configuration, the class names and indices, the run id
        metrics.csv   one row per finished epoch (see train.py for the columns)
        status.json   {"state": "running" | "interrupted" | "finished" | "diverged", ...}
        checkpoint.pt model, optimizer, history, RNG states at the last checkpoint
        .lock         held (flock) by the one process that trains the run

`get_run(config)` returns a finished (or diverged) run's history at once, resumes an
interrupted one from its checkpoint, and trains an absent one. Every file is written
atomically (temporary file + rename); a second process asking for a run that is being
trained waits for the lock and then reads the result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .data import Cifar100, load_cifar100, locate_cifar100
from .provenance import atomic_write_text
from .train import RunDiverged, Trainer, TrainConfig, resolve_device

FINAL_STATES = ("finished", "diverged")


@dataclass
class Run:
    """A stored run: its directory, resolved configuration, class names, status and history."""

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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory as it is (any state), without training."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.csv"
    history = pd.read_csv(metrics) if metrics.exists() and metrics.stat().st_size else pd.DataFrame()
    return Run(run_dir, read_json(run_dir / "config.json"), read_json(run_dir / "status.json"), history)


def run_dir_for(config: TrainConfig, runs_dir: str | Path = "runs") -> Path:
    """Where the run of `config` lives (it may not exist yet)."""
    return Path(runs_dir) / config.run_id()


@contextlib.contextmanager
def _exclusive_lock(path: Path, quiet: bool):
    """Hold an exclusive flock on `path`; wait (saying so) if another process holds it."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not quiet:
                print(f"waiting for another process that is training {path.parent.name} ...",
                      file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_history(run_dir: Path, history: list[dict]) -> None:
    atomic_write_text(run_dir / "metrics.csv", pd.DataFrame(history).to_csv(index=False))


def get_run(config: TrainConfig, runs_dir: str | Path = "runs", data: Cifar100 | None = None,
            data_root: str | os.PathLike | None = None, verify_data: bool = True,
            progress: bool | None = None, train: bool = True) -> Run:
    """The run of `config`: stored if finished or diverged, else trained (or resumed) now.

    data: CIFAR-100 already loaded (else loaded from data_root / CCQL_DATA_ROOT / the default
    folder, only if training is needed). Unverified data (data loaded with verify=False, or
    verify_data=False) gets run ids of its own, tied to its folder. train=False returns whatever
    is stored without training. A diverged run is returned with `diverged` True and is never
    reported as finished.
    """
    config = config.resolved()
    if data is not None:
        verify_data = data.verified
    if not verify_data:
        folder = data.folder if data is not None else locate_cifar100(data_root, download=False)
        config = dataclasses.replace(config, dataset=f"unverified-{Path(folder).resolve()}")
    run_dir = run_dir_for(config, runs_dir)
    stored = load_run(run_dir)
    if stored.state in FINAL_STATES or not train:
        return stored

    if data is None:  # before creating anything, so a data error leaves no empty run folder
        data = load_cifar100(data_root, verify=verify_data)
    run_dir.mkdir(parents=True, exist_ok=True)
    quiet = progress is False
    with _exclusive_lock(run_dir / ".lock", quiet):
        stored = load_run(run_dir)           # another process may have finished it meanwhile
        if stored.state in FINAL_STATES:
            return stored
        status = {"state": "running", "run_id": run_dir.name, "pid": os.getpid(),
                  "host": socket.gethostname(), "started": _now(), "epochs_completed": 0,
                  "epochs": config.epochs}

        def on_epoch(history: list[dict]) -> None:
            _write_history(run_dir, history)
            status.update(epochs_completed=len(history), updated=_now())
            _write_json(run_dir / "status.json", status)

        trainer = Trainer(config, data, run_dir, progress=progress, on_epoch=on_epoch)
        record = {"run_id": run_dir.name, "config": trainer.config.identity(),
                  "class_names": trainer.class_names, "class_indices": trainer.class_indices,
                  "device": str(trainer.device), "precision_used": "bf16" if trainer.use_bf16 else "fp32",
                  "compile": config.compile, "data_folder": data.folder}
        _write_json(run_dir / "config.json", record)
        status["resumed_from_epoch"] = len(trainer.history)
        status["device"] = _device_name(trainer.device)
        on_epoch(trainer.history)
        try:
            history = trainer.run()
        except RunDiverged as exc:
            status.update(state="diverged", diverged_epoch=len(trainer.history), reason=str(exc),
                          updated=_now())
            _write_json(run_dir / "status.json", status)
            print(f"run {run_dir.name} diverged: {exc}", file=sys.stderr)
            return load_run(run_dir)
        except KeyboardInterrupt:
            status.update(state="interrupted", updated=_now())
            _write_json(run_dir / "status.json", status)
            raise
        _write_history(run_dir, history)
        status.update(state="finished", epochs_completed=len(history), finished=_now())
        _write_json(run_dir / "status.json", status)
    return load_run(run_dir)


def _device_name(device) -> str:
    import torch
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


__all__ = ["Run", "get_run", "load_run", "run_dir_for", "resolve_device"]
