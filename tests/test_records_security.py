"""Nothing from outside is trusted (issue 28): checkpoints are loaded with weights_only=True, so a
planted pickle never runs; import reads only a source's record files, checks every record against
its own configuration before adding any, and never writes into its source; export is atomic."""
import errno
import fcntl
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ccql_utils import RunError, TrainConfig, load_run
from ccql_utils.execution import records as records_module
from ccql_utils.execution.records import export_records, import_records
from ccql_utils.execution.store import RECORD_FILES
from ccql_utils.core.train import Trainer
import conftest

IMPORT_FIX = "re-export it on the machine that trained it"


def config(**overrides) -> TrainConfig:
    return conftest.tiny_config(**overrides)


class Planted:
    """A pickle payload: unpickling it creates `marker` (what arbitrary code could do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant(path: Path, marker: Path, how: str) -> None:
    """Write a checkpoint.pt that runs code when unpickled: through torch.save or a bare pickle."""
    if how == "torch.save":
        torch.save({"model": {}, "optimizer": {}, "history": [], "identity": {},
                    "record": Planted(marker), "cpu_rng": torch.get_rng_state(), "cuda_rng": None},
                   path)
    else:
        path.write_bytes(pickle.dumps(Planted(marker), protocol=2))


def one_line(info) -> str:
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def snapshot(folder: Path) -> dict:
    """Every file under `folder`: its bytes and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory):
    """A runs folder with a finished 2-epoch run and a run that diverged in epoch 1 (test loss NaN)."""
    runs_dir = tmp_path_factory.mktemp("trained") / "runs"
    ctx = conftest.run_context(runs_dir, synthetic_data)
    finished, diverged = conftest.obtain_one(ctx, config()), conftest.obtain_one(ctx, config(lr=1000.0))
    assert finished.finished and diverged.diverged and len(diverged.history) == 1
    return runs_dir, finished.run_dir.name, diverged.run_dir.name


@pytest.fixture
def runs(trained, tmp_path):
    """(runs folder, finished run folder, diverged run folder): this test's own copy."""
    runs_dir, finished, diverged = trained
    shutil.copytree(runs_dir, tmp_path / "runs")
    return tmp_path / "runs", tmp_path / "runs" / finished, tmp_path / "runs" / diverged


def relabel(run_dir: Path, destination: Path, **changes) -> Path:
    """A copy of `run_dir`'s record (no checkpoint) as the run of its configuration with `changes`:
    a second valid record under its own run id."""
    record = json.loads((run_dir / "config.json").read_text())
    record["config"].update(changes)
    record["run_id"] = TrainConfig.from_dict(record["config"]).run_id()
    target = destination / record["run_id"]
    target.mkdir(parents=True)
    for name in ("metrics.csv", "status.json"):
        shutil.copyfile(run_dir / name, target / name)
    status = json.loads((target / "status.json").read_text())
    (target / "status.json").write_text(json.dumps({**status, "run_id": record["run_id"]}))
    (target / "config.json").write_text(json.dumps(record))
    return target


# ----------------------------------------------------------------------------- 1. no unpickling
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
@pytest.mark.parametrize("damaged", ["config.json", "metrics.csv"])
def test_load_run_never_unpickles_a_planted_checkpoint_when_it_rebuilds_a_damaged_record(
        runs, tmp_path, how, damaged):
    _, run_dir, _ = runs
    marker = tmp_path / "marker"
    plant(run_dir / "checkpoint.pt", marker, how)
    (run_dir / damaged).write_text("{damaged")
    with pytest.raises(RunError) as info:
        load_run(run_dir)
    assert "no readable checkpoint holds" in one_line(info) and str(run_dir) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_resuming_from_a_planted_checkpoint_stops_in_one_line_without_running_it(
        synthetic_data, tmp_path, how):
    ctx = conftest.run_context(tmp_path / "runs", synthetic_data)
    run_dir = ctx.store.path(config())
    run_dir.mkdir(parents=True)
    marker = tmp_path / "marker"
    plant(run_dir / "checkpoint.pt", marker, how)
    with pytest.raises(RunError) as info:
        conftest.obtain_one(ctx, config())
    message = one_line(info)
    assert str(run_dir / "checkpoint.pt") in message and "delete it to restart" in message
    assert not marker.exists()


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_import_never_reads_a_sources_checkpoint_planted_or_not(runs, tmp_path, how):
    _, run_dir, _ = runs
    source = tmp_path / "source"
    shutil.copytree(run_dir, source / run_dir.name)
    marker = tmp_path / "marker"
    plant(source / run_dir.name / "checkpoint.pt", marker, how)
    assert import_records(source, tmp_path / "laptop") == [run_dir.name]
    assert sorted(p.name for p in (tmp_path / "laptop" / run_dir.name).iterdir()) == sorted(RECORD_FILES)
    (source / run_dir.name / "config.json").write_text("{damaged")  # what load_run would rebuild
    with pytest.raises(RunError) as info:
        import_records(source, tmp_path / "elsewhere")
    assert f"{source / run_dir.name / 'config.json'}: not JSON" in one_line(info)
    assert not marker.exists() and not (tmp_path / "elsewhere" / run_dir.name).exists()


def test_checkpoints_hold_only_plain_values_so_numpy_numbers_in_the_history_still_resume(
        synthetic_data, tmp_path):
    trainer = Trainer(config(), synthetic_data, tmp_path / "run", progress=False)
    trainer.run_dir.mkdir()
    trainer.history = [{"epoch": np.int64(1), "train_loss": np.float64(1.5), "ok": np.bool_(True),
                        "pair": (np.float32(0.25), 2)}]
    trainer._save_checkpoint()
    state = torch.load(trainer.checkpoint_path, weights_only=True)
    assert state["history"] == [{"epoch": 1, "train_loss": 1.5, "ok": True, "pair": [0.25, 2]}]
    assert type(state["history"][0]["train_loss"]) is float
    resumed = Trainer(config(), synthetic_data, trainer.run_dir, progress=False)
    assert resumed.history == state["history"] and resumed.checkpointed_epochs == 1


def test_an_old_checkpoint_that_needs_full_unpickling_stops_the_resume_in_one_line(
        synthetic_data, tmp_path):
    """A checkpoint whose history holds numpy floats (weights_only cannot load it) is refused
    with the file and the fix, not unpickled."""
    ctx = conftest.run_context(tmp_path / "runs", synthetic_data)
    trainer = Trainer(config(), synthetic_data, ctx.store.path(config()), progress=False)
    trainer.run_dir.mkdir(parents=True)
    torch.save({"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                "history": [{"epoch": 1, "train_loss": np.float64(1.5)}],
                "identity": trainer.config.identity(), "record": trainer.record,
                "cpu_rng": torch.get_rng_state(), "cuda_rng": None}, trainer.checkpoint_path)
    with pytest.raises(RunError) as info:
        conftest.obtain_one(ctx, config())
    message = one_line(info)
    assert str(trainer.checkpoint_path) in message and "delete it to restart" in message


# ----------------------------------------------------------------------------- 2. import is read-only
@pytest.mark.parametrize("damaged", ["config.json", "metrics.csv"])
def test_import_refuses_a_record_its_checkpoint_could_repair_and_leaves_the_source_untouched(
        runs, tmp_path, damaged):
    _, run_dir, _ = runs  # a real checkpoint that holds the record: load_run would rebuild it
    source = tmp_path / "source"
    shutil.copytree(run_dir, source / run_dir.name)
    (source / run_dir.name / damaged).write_text("")
    before = snapshot(source)
    with pytest.raises(RunError) as info:
        import_records(source, tmp_path / "laptop")
    assert str(source / run_dir.name / damaged) in one_line(info) and IMPORT_FIX in str(info.value)
    assert snapshot(source) == before and not (tmp_path / "laptop" / run_dir.name).exists()


# ----------------------------------------------------------------------------- 3. validate all, then add
def damage_record(record: Path, fault: str) -> str:
    """Make `record` (a finished 2-epoch run's copy) inconsistent by `fault`; returns the file
    the refusal must name."""
    metrics, status = pd.read_csv(record / "metrics.csv"), json.loads((record / "status.json").read_text())
    config_json = json.loads((record / "config.json").read_text())
    named = "metrics.csv"
    if fault == "renamed_folder":
        other = record.with_name(record.name[:-12] + "0" * 12)
        record.rename(other)
        return "config.json"
    if fault == "other_configuration":
        config_json["config"]["lr"] = 0.5
        named = "config.json"
    elif fault == "rows_dropped":
        metrics = metrics.iloc[:1]
    elif fault == "fewer_rows_than_configured":  # status agrees with the rows, not with the config
        metrics, status = metrics.iloc[:1], {**status, "epochs": 1, "epochs_completed": 1}
        named = "status.json"
    elif fault == "status_epochs_disagree":
        status, named = {**status, "epochs": 3}, "status.json"
    elif fault == "epochs_misnumbered":
        metrics["epoch"] = [2, 1]
    elif fault == "negative_loss":
        metrics.loc[0, "test_loss"] = -0.5
    elif fault == "nan_loss_in_a_finished_run":
        metrics.loc[1, "train_loss"] = np.nan
    elif fault == "accuracy_above_one":
        metrics.loc[1, "test_acc"] = 1.5
    elif fault == "infinite_clean_accuracy":
        metrics["train_clean_acc"] = [np.nan, np.inf]
    elif fault == "text_in_a_column":
        metrics["train_acc"] = ["0.1", "many"]
    elif fault == "not_final":
        status, named = {**status, "state": "interrupted"}, "status.json"
    elif fault == "status_missing":
        (record / "status.json").unlink()
        return "status.json"
    elif fault == "diverged_after_the_configured_epochs":
        status, named = {**status, "state": "diverged", "diverged_epoch": 3}, "status.json"
    elif fault == "diverged_rows_disagree":  # 2 rows, diverged in epoch 1
        metrics.loc[0, "train_loss"] = np.nan
        status = {**status, "state": "diverged", "diverged_epoch": 1}
    elif fault == "diverged_with_finite_losses":
        status = {**status, "state": "diverged", "diverged_epoch": 2}
    elif fault == "diverged_before_its_last_row":
        metrics.loc[0, "test_loss"] = np.nan
        metrics.loc[1, "test_loss"] = np.nan
        status = {**status, "state": "diverged", "diverged_epoch": 2}
    else:
        raise ValueError(fault)
    metrics.to_csv(record / "metrics.csv", index=False)
    (record / "status.json").write_text(json.dumps(status))
    (record / "config.json").write_text(json.dumps(config_json))
    return named


REASONS = {  # fault: what the refusal says
    "renamed_folder": "not its folder", "other_configuration": "its configuration is that of run",
    "rows_dropped": "but metrics.csv has 1 rows",
    "fewer_rows_than_configured": "says 1 epochs, its configuration 2",
    "status_epochs_disagree": "says 3 epochs", "epochs_misnumbered": "not numbered 1..2",
    "negative_loss": "test_loss is -0.5 in epoch 1",
    "nan_loss_in_a_finished_run": "train_loss is nan in epoch 2",
    "accuracy_above_one": "test_acc is 1.5", "infinite_clean_accuracy": "train_clean_acc is inf",
    "text_in_a_column": "column train_acc is not numeric", "not_final": "not a finished or diverged run",
    "status_missing": "missing", "diverged_after_the_configured_epochs": "diverged_epoch 3 is not an epoch",
    "diverged_rows_disagree": "but metrics.csv has 2 rows",
    "diverged_with_finite_losses": "losses are finite",
    "diverged_before_its_last_row": "test_loss is nan in epoch 1"}


@pytest.mark.parametrize("archive", [False, True], ids=["folder", "archive"])
@pytest.mark.parametrize("fault", list(REASONS))
def test_import_refuses_an_inconsistent_record_and_adds_none_of_the_others(runs, tmp_path, fault, archive):
    runs_dir, run_dir, diverged = runs
    source = tmp_path / "source"
    export_records([run_dir, diverged], source)
    seed = next(s for s in range(1, 100)  # a valid record read before the bad one: not added
                if TrainConfig.from_dict({**json.loads((run_dir / "config.json").read_text())["config"],
                                          "seed": s}).run_id() < run_dir.name)
    good = relabel(run_dir, source, seed=seed)
    named = damage_record(source / run_dir.name, fault)
    if archive:
        with tarfile.open(tmp_path / "records.tar.gz", "w:gz") as tar:
            for path in sorted(source.rglob("*")):
                if path.is_file():
                    tar.add(path, arcname=str(path.relative_to(source)))
        source = tmp_path / "records.tar.gz"
    laptop = tmp_path / "laptop"
    (laptop / "earlier").mkdir(parents=True)
    with pytest.raises(RunError) as info:
        import_records(source, laptop)
    message = one_line(info)
    member = [p for p in (tmp_path / "source").iterdir() if p.name not in (good.name, diverged.name)][0].name
    place = f"{source} member {member}/{named}" if archive else str(source / member / named)
    assert message.startswith(f"{place}: ") and REASONS[fault] in message and IMPORT_FIX in message, message
    assert sorted(p.name for p in laptop.iterdir()) == ["earlier"]


def test_import_accepts_a_real_diverged_run_and_clean_metrics_left_empty(runs, tmp_path):
    _, run_dir, diverged = runs
    source = tmp_path / "source"
    export_records([run_dir, diverged], source)
    metrics = pd.read_csv(source / run_dir.name / "metrics.csv")
    metrics["train_clean_loss"], metrics["train_clean_acc"] = [np.nan, 1.6], [np.nan, 0.2]
    metrics.to_csv(source / run_dir.name / "metrics.csv", index=False)
    assert sorted(import_records(source, tmp_path / "laptop")) == sorted([run_dir.name, diverged.name])
    assert load_run(tmp_path / "laptop" / diverged.name).diverged


def test_import_refuses_two_members_of_one_run_in_an_archive(runs, tmp_path):
    _, run_dir, _ = runs
    archive = tmp_path / "records.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in RECORD_FILES + ("metrics.csv",):
            tar.add(run_dir / name, arcname=f"{run_dir.name}/{name}")
    with pytest.raises(RunError) as info:
        import_records(archive, tmp_path / "laptop")
    assert f"{archive} member {run_dir.name}/metrics.csv appears twice" in one_line(info)
    assert not (tmp_path / "laptop" / run_dir.name).exists()


def test_import_refuses_a_different_record_of_a_stored_run_unless_replace(runs, tmp_path):
    runs_dir, run_dir, _ = runs
    source = tmp_path / "source"
    export_records([run_dir], source)
    assert import_records(source, runs_dir) == []  # the same record: skipped silently
    metrics = pd.read_csv(source / run_dir.name / "metrics.csv")
    metrics["seconds"] = metrics["seconds"] + 1.0  # trained elsewhere: another record of the run
    metrics.to_csv(source / run_dir.name / "metrics.csv", index=False)
    before = snapshot(runs_dir)
    with pytest.raises(RunError) as info:
        import_records(source, runs_dir)
    message = one_line(info)
    assert str(source / run_dir.name) in message and str(run_dir) in message and "--replace" in message
    assert snapshot(runs_dir) == before
    assert import_records(source, runs_dir, replace=True) == [run_dir.name]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(RECORD_FILES)  # its checkpoint went too
    pd.testing.assert_frame_equal(load_run(run_dir).history, metrics)
    assert import_records(source, runs_dir) == []


def test_import_replaces_a_damaged_stored_run_only_when_asked(runs, tmp_path):
    runs_dir, run_dir, _ = runs
    source = tmp_path / "source"
    export_records([run_dir], source)
    (run_dir / "checkpoint.pt").unlink()
    (run_dir / "metrics.csv").write_text("garbage")
    with pytest.raises(RunError) as info:
        import_records(source, runs_dir)
    message = one_line(info)
    assert message.startswith(f"{run_dir}: ") and f"--replace) to put {source / run_dir.name}" in message
    assert (run_dir / "metrics.csv").read_text() == "garbage"
    assert import_records(source, runs_dir, replace=True) == [run_dir.name]
    assert load_run(run_dir).finished


def test_import_refuses_to_write_a_run_that_another_process_is_training(runs, tmp_path):
    runs_dir, run_dir, _ = runs
    source = tmp_path / "source"
    export_records([run_dir], source)
    shutil.rmtree(run_dir)
    run_dir.mkdir()
    with open(run_dir / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as the run store holds it while training
        with pytest.raises(RunError) as info:
            import_records(source, runs_dir)
        assert one_line(info).startswith(f"{run_dir} is being trained by another process")
    assert [p.name for p in run_dir.iterdir()] == [".lock"]
    assert import_records(source, runs_dir) == [run_dir.name]  # once it has stopped


def tar_with(archive: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


@pytest.mark.parametrize("kind", ["traversal", "traversal_two_parts", "absolute", "symlink", "hardlink",
                                  "fifo", "checkpoint", "three_parts", "oversized"])
def test_import_refuses_an_unsafe_or_foreign_archive_member_in_one_line(runs, tmp_path, monkeypatch, kind):
    _, run_dir, _ = runs
    name = {"traversal": f"../{run_dir.name}/config.json", "traversal_two_parts": "../config.json",
            "absolute": str(tmp_path / "abs.json"),
            "checkpoint": f"{run_dir.name}/checkpoint.pt", "three_parts": f"a/{run_dir.name}/config.json"
            }.get(kind, f"{run_dir.name}/config.json")
    member = tarfile.TarInfo(name)
    data = (run_dir / "config.json").read_bytes()
    member.size = len(data)
    if kind in ("symlink", "hardlink"):
        member.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
        member.linkname, member.size = "/etc/passwd", 0
    elif kind == "fifo":
        member.type, member.size = tarfile.FIFOTYPE, 0
    elif kind == "oversized":
        monkeypatch.setattr(records_module, "MAX_RECORD_FILE_BYTES", len(data) - 1)
    archive = tmp_path / "records.tar.gz"
    tar_with(archive, member, data)
    laptop = tmp_path / "inner" / "laptop"
    with pytest.raises(RunError) as info:
        import_records(archive, laptop)
    reason = {"symlink": "a link", "hardlink": "a link", "fifo": "not a regular file",
              "checkpoint": "not a run record file", "three_parts": "not a run record file",
              "oversized": "more than a record file may hold"}.get(kind, "a path that is not")
    message = one_line(info)
    assert message.startswith(f"{archive} member {name!r}: ") and reason in message and IMPORT_FIX in message
    assert not laptop.exists() and not (tmp_path / "inner" / run_dir.name).exists()
    assert not (tmp_path / "abs.json").exists()


# ----------------------------------------------------------------------------- 4. export is atomic
def a_valid_archive(path: Path, run_ids: list[str], tmp_path: Path) -> None:
    """`path` is a complete archive of exactly `run_ids` (it imports)."""
    laptop = Path(tmp_path) / f"check-{random.random()}"
    assert sorted(import_records(path, laptop)) == sorted(run_ids)
    shutil.rmtree(laptop)


@pytest.mark.parametrize("error", ["KeyboardInterrupt", "ENOSPC"])
def test_an_export_that_stops_midway_leaves_the_previous_archive_or_none(runs, tmp_path, monkeypatch, error):
    runs_dir, run_dir, diverged = runs
    extra = relabel(run_dir, runs_dir, seed=2)
    dirs = [run_dir, diverged, extra]
    archive = tmp_path / "out" / "records.tar.gz"
    add = tarfile.TarFile.addfile
    for existed in (False, True):
        if existed:
            export_records([run_dir], archive)
        before = archive.read_bytes() if existed else None
        for stop_at in range(0, 3 * len(dirs)):
            calls = []

            def failing_addfile(self, *args, **kwargs):
                calls.append(1)
                if len(calls) > stop_at:
                    if error == "KeyboardInterrupt":
                        raise KeyboardInterrupt
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return add(self, *args, **kwargs)
            monkeypatch.setattr(tarfile.TarFile, "addfile", failing_addfile)
            with pytest.raises(KeyboardInterrupt if error == "KeyboardInterrupt" else RunError) as info:
                export_records(dirs, archive)
            if error == "ENOSPC":
                message = one_line(info)
                assert "No space left on device" in message and str(archive) in message
                assert ("previous archive is intact" if existed else "no archive was written") in message
            monkeypatch.undo()
            assert (archive.read_bytes() if archive.exists() else None) == before, stop_at
            assert [p.name for p in archive.parent.iterdir()] == ([archive.name] if existed else [])
    export_records(dirs, archive)
    a_valid_archive(archive, [d.name for d in dirs], tmp_path)


def test_an_export_killed_at_random_moments_never_leaves_a_partial_archive(runs, tmp_path):
    runs_dir, run_dir, _ = runs
    big = relabel(run_dir, runs_dir, epochs=30000)  # ~5 MB of metrics: an export that takes a while
    rows = pd.read_csv(big / "metrics.csv")
    rows = rows.iloc[np.arange(30000) % 2].reset_index(drop=True)
    rows["epoch"] = np.arange(1, 30001)
    rows["seconds"] = np.random.default_rng(0).random(30000)  # incompressible-ish
    rows.to_csv(big / "metrics.csv", index=False)
    status = json.loads((big / "status.json").read_text())
    (big / "status.json").write_text(json.dumps({**status, "epochs": 30000, "epochs_completed": 30000}))
    dirs = [str(run_dir), str(big)]
    archive = tmp_path / "records.tar.gz"
    export_records([run_dir], archive)
    old = archive.read_bytes()
    start = time.perf_counter()
    export_records(dirs, tmp_path / "timed.tar.gz")
    seconds = time.perf_counter() - start
    script = ("import sys; from ccql_utils.execution.records import export_records; print('ready', flush=True); "
              "export_records(sys.argv[2:], sys.argv[1]); print('done', flush=True)")
    rng, outcomes = random.Random(28), []
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", script, str(archive), *dirs],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 1.5 * seconds))
        proc.send_signal(signal.SIGKILL)
        outcomes.append(proc.wait() == -signal.SIGKILL)
        proc.stdout.close()
        if archive.read_bytes() == old:
            a_valid_archive(archive, [run_dir.name], tmp_path)
        else:  # the export ended before the kill: the complete new archive
            a_valid_archive(archive, [run_dir.name, big.name], tmp_path)
            archive.write_bytes(old)
    # what a kill leaves besides the archive is a hidden temporary file, and some kill left one
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "records.tar.gz", "runs", "timed.tar.gz"]
    assert any(outcomes) and list(tmp_path.glob(".records.tar.gz.*.tmp")), "no kill landed mid-write"


@pytest.mark.parametrize("cut", [0, 1, 10, 100, 0.25, 0.5, 0.75, -100, -9, -4, -1])
def test_import_refuses_a_truncated_or_garbage_archive_in_one_line(runs, tmp_path, cut):
    _, run_dir, diverged = runs
    archive = tmp_path / "records.tar.gz"
    export_records([run_dir, diverged], archive)
    data = archive.read_bytes()
    keep = int(cut * len(data)) if isinstance(cut, float) else cut % len(data)
    archive.write_bytes(data[:keep] if keep else b"not an archive at all\x00\x01")
    with pytest.raises(RunError) as info:
        import_records(archive, tmp_path / "laptop")
    assert one_line(info).startswith(f"{archive}") and IMPORT_FIX in str(info.value)
    assert not (tmp_path / "laptop").exists() or not any((tmp_path / "laptop").iterdir())


def test_a_folder_export_that_stops_midway_leaves_each_run_folder_complete_or_absent(
        runs, tmp_path, monkeypatch):
    runs_dir, run_dir, diverged = runs
    dirs = [run_dir, diverged]
    out = tmp_path / "records"
    copy = shutil.copyfile
    for stop_at in range(1, 3 * len(dirs)):
        calls = []

        def failing_copy(*args, **kwargs):
            calls.append(1)
            if len(calls) > stop_at:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return copy(*args, **kwargs)
        monkeypatch.setattr(shutil, "copyfile", failing_copy)
        with pytest.raises(RunError, match="No space left on device"):
            export_records(dirs, out)
        monkeypatch.undo()
        for folder in out.iterdir():
            assert not folder.name.startswith(".")  # no staging folder left behind
            assert sorted(p.name for p in folder.iterdir()) == sorted(RECORD_FILES)
        shutil.rmtree(out)
    (out / f".{run_dir.name}.export-1.tmp").mkdir(parents=True)  # a killed export's staging folder
    export_records(dirs, out)
    assert sorted(import_records(out, tmp_path / "laptop")) == sorted(d.name for d in dirs)


@pytest.mark.parametrize("where", ["runs_folder", "in_runs_folder", "in_a_run_folder", "archive_is_a_folder",
                                   "folder_is_a_file", "another_runs_folder"])
def test_export_refuses_to_write_into_its_own_runs_or_over_what_is_there(runs, tmp_path, where):
    runs_dir, run_dir, _ = runs
    destination = {"runs_folder": runs_dir, "in_runs_folder": runs_dir / "records",
                   "in_a_run_folder": run_dir / "records.tar.gz",
                   "archive_is_a_folder": tmp_path / "records.tar.gz",
                   "folder_is_a_file": tmp_path / "records",
                   "another_runs_folder": tmp_path / "laptop"}[where]
    if where == "another_runs_folder":  # where the same run trained (a checkpoint) is not replaced
        shutil.copytree(runs_dir, destination)
        (destination / run_dir.name / "status.json").write_text("{}")
        kept = snapshot(destination)
    if where == "archive_is_a_folder":
        destination.mkdir()
    elif where == "folder_is_a_file":
        destination.write_text("precious")
    before = snapshot(runs_dir)
    with pytest.raises(RunError) as info:
        export_records([run_dir], destination)
    assert str(destination) in one_line(info)
    assert snapshot(runs_dir) == before
    assert where != "folder_is_a_file" or destination.read_text() == "precious"
    assert where != "another_runs_folder" or snapshot(destination) == kept
