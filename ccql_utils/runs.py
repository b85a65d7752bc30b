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
import json
import os
import shutil
import socket
import sys
import tarfile
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .config import TrainConfig
from .data import Cifar100, DataError, data_source, load_cifar100
from .progress import progress_mode
from .provenance import atomic_write_text, describe_device
from .stacked import StackedTrainer, plan_stacks
from .train import RunDiverged, RunError, Trainer, load_checkpoint

FINAL_STATES = ("finished", "diverged")
RECORD_FILES = ("config.json", "metrics.csv", "status.json")  # all a finished run needs


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
    needed = {"epoch", "train_loss", "train_acc", "test_loss", "test_acc"}
    if not needed <= set(history.columns) or list(history.epoch) != list(range(1, len(history) + 1)):
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
        self.write_status(resumed_from_epoch=len(trainer.history), epochs_completed=len(trainer.history),
                          device=describe_device(trainer.device), **execution)

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
    stand-in) gets run ids of its own, tied to its folder. progress: the per-epoch display
    (progress.py: True/None a bar in terminals and notebooks, else lines; 'lines'; False: silent).
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
                raise DataError(f"{data.folder} was packed from data that is not CIFAR-100's "
                                f"published content; pass --unverified-data (verify_data=False)")
            self._data = data
        return self._data

    def resolve(self, config: TrainConfig) -> TrainConfig:
        """The validated config as this store identifies it (tagged when the data is unverified)."""
        config = config.resolved()
        if self.verify_data:
            return config
        folder = self._data.folder if self._data is not None else data_source(self.data_root)
        return replace(config, dataset=f"unverified-{Path(folder).resolve()}").resolved()

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
def export_records(run_dirs: Iterable[str | Path], destination: str | Path) -> list[str]:
    """Copy the records (config, metrics, status; no checkpoints) of finished or diverged runs to
    `destination`: a folder, or a .tar.gz archive. Returns the run ids exported; others skipped."""
    runs = [load_run(d) for d in run_dirs]
    final = [r for r in runs if r.state in FINAL_STATES]
    destination = Path(destination)
    if destination.name.endswith((".tar.gz", ".tgz")):
        destination.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(destination, "w:gz") as tar:
            for run in final:
                for name in RECORD_FILES:
                    tar.add(run.run_dir / name, arcname=f"{run.run_dir.name}/{name}")
    else:
        for run in final:
            target = destination / run.run_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for name in RECORD_FILES:
                shutil.copyfile(run.run_dir / name, target / name)
    return [r.run_dir.name for r in final]


def import_records(source: str | Path, runs_dir: str | Path) -> list[str]:
    """Add the finished or diverged runs in `source` (a folder of run folders, or an archive made by
    `export_records`) to `runs_dir`, each checked as `load_run` checks it. Runs already final there
    are kept. Returns the run ids added. Raises RunError for a record that fails its checks."""
    source = Path(source)
    with tempfile.TemporaryDirectory() as scratch:
        if source.is_file():
            with tarfile.open(source) as tar:
                members = [m for m in tar.getmembers() if m.isfile()
                           and len(Path(m.name).parts) == 2 and Path(m.name).name in RECORD_FILES]
                tar.extractall(scratch, members=members, filter="data")
            source = Path(scratch)
        elif not source.is_dir():
            raise RunError(f"no run records at {source}: give a folder of run folders or a .tar.gz")
        added = []
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            run = load_run(folder)
            if run.state not in FINAL_STATES:
                raise RunError(f"{folder}: not a finished or diverged run record ({run.describe()})")
            target = Path(runs_dir) / folder.name
            if load_run(target).state in FINAL_STATES:
                continue
            target.mkdir(parents=True, exist_ok=True)
            for name in RECORD_FILES:
                atomic_write_text(target / name, (folder / name).read_text())
            added.append(folder.name)
    return added


__all__ = ["FINAL_STATES", "Run", "RunError", "RunInterrupted", "RunStore", "export_records", "import_records",
           "load_run"]
