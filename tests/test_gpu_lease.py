"""A GPU lease rehearsed on the CPU: the data in parts, moved one part per command, reassembled and
checked; the queue planned within a budget; the runs trained, exported as they finish, imported
elsewhere and drawn without data. And the packs themselves: exact, and never self-vouching."""
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ccql_utils.core import data as D
from ccql_utils.core import packs as P
from ccql_utils.cli.remote import DRY_RUN
from ccql_utils.execution.context import RunContext
from ccql_utils.core.estimates import check_cpu_time, estimate_seconds
from ccql_utils.cli.gpu_queue import QUEUE, plan
from ccql_utils.figures.presets import experiment_configs
from ccql_utils.execution.records import import_records
from ccql_utils.execution.store import RunStore

from conftest import obtain_one, run_context

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cli(*args, **env):
    return subprocess.run([sys.executable, "-m", "ccql_utils", *map(str, args)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def lease_script(*args, **env):
    return subprocess.run(["bash", "scripts/gpu_lease.sh", *map(str, args)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PY": sys.executable, **env})


# ----------------------------------------------------------------------------- packs
@pytest.mark.realdata
def test_the_full_data_in_parts_reassembles_to_the_same_images_order_and_run_ids(real_data, tmp_path):
    folder = P.pack_subset(real_data, tmp_path / "all", range(100))  # PART_MIB
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    assert len(sizes) == 5 and max(sizes.values()) <= P.PART_MIB * 2**20  # 4 parts + manifest
    packed = D.load_cifar100(folder)
    assert packed.verified  # decided from the images, against the committed index
    for name in P.PACKED_ARRAYS:
        assert np.array_equal(getattr(packed, name), getattr(real_data, name)), name
    config = experiment_configs("k100", "gpu-short")["QL"]
    assert (RunStore(tmp_path / "a", data_root=folder).path(config)
            == RunStore(tmp_path / "a", data_root=os.environ["CCQL_DATA_ROOT"]).path(config))


@pytest.mark.realdata
def test_a_forged_pack_is_refused_as_cifar100_and_gets_run_ids_of_its_own(real_data, tmp_path):
    path = P.pack_subset(real_data, tmp_path / "k25.npz", D.random_classes(25, 0), 20, 10)
    assert P.load_packed(path).verified
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_images"][7] = 255 - arrays["train_images"][7]  # forged pixels ...
    meta = json.loads(str(arrays["meta"]))
    meta["sha256"]["train_images"] = P.array_sha256(arrays["train_images"])  # ... with their checksum
    meta["verified"] = True  # and the flag an older pack format trusted
    arrays["meta"] = np.array(json.dumps(meta))
    forged = tmp_path / "forged.npz"
    np.savez(forged, **arrays)
    assert not P.load_packed(forged).verified
    config = replace(experiment_configs("k25_random", "quick")["QL"], train_per_class=20, device="cpu")
    with pytest.raises(D.DataError, match="image by image"):
        obtain_one(RunContext.of(runs_dir=tmp_path / "runs", data_root=forged), config)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    real_id = RunStore(tmp_path / "runs", data_root=path).path(config).name
    forged_id = RunStore(tmp_path / "runs", data_root=forged, verify_data=False).path(config).name
    assert forged_id != real_id


def test_missing_and_damaged_parts_are_named_in_one_line(synthetic_data, tmp_path):
    folder = P.pack_subset(synthetic_data, tmp_path / "pack", range(100), part_mib=1)
    parts = sorted(p.name for p in folder.glob("part-*"))
    assert len(parts) >= 4
    (folder / parts[1]).unlink()
    (folder / parts[2]).write_bytes((folder / parts[2]).read_bytes()[:100])
    proc = cli("verify-pack", folder)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    line, = proc.stderr.strip().splitlines()
    assert f"missing: {parts[1]}" in line and f"damaged: {parts[2]}" in line
    (folder / "manifest.json").write_text("{not json")
    proc = cli("verify-pack", folder)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1 and "manifest" in proc.stderr


# ----------------------------------------------------------------------------- the queue
def test_plan_takes_the_queue_in_order_within_the_budget_and_skips_committed_runs(tmp_path):
    fig2_ql, fig2_ce = QUEUE[0], QUEUE[1]
    assert (fig2_ql.label, fig2_ce.label) == ("QL", "CE") and fig2_ql.config.classes == "all"
    first = plan(540, results_dir=tmp_path)
    assert first.runs[0] is fig2_ql and first.total_s <= 540
    assert [w.config.num_classes for w in first.runs[1:]] == [25] * (len(first.runs) - 1)  # fill
    committed = tmp_path / "records" / fig2_ql.run_id
    committed.mkdir(parents=True)
    (committed / "status.json").write_text("{}")
    assert plan(540, results_dir=tmp_path).runs[0] is fig2_ce
    # the estimates are the measured H200 rates: K = 100 at gpu-short about 6.5 min, paper K = 25 about 6
    assert 360 < estimate_seconds(fig2_ql.config) < 420
    assert 330 < estimate_seconds(experiment_configs("k25_random", "paper")["QL"]) < 390
    # the committed gpu-short records of Fig 1 and 3 are done: seed 0 of K = 25 is not queued
    done = {c.run_id() for c in experiment_configs("k25_random", "gpu-short").values()}
    assert done.isdisjoint(w.run_id for w in plan(1e6).runs)


def test_a_whole_lease_rehearsed_on_the_cpu_returns_records_that_redraw_fig2_elsewhere(
        tmp_path, monkeypatch):
    D.write_synthetic_cifar100(tmp_path / "data", train_per_class=10, test_per_class=5)
    proc = cli("pack", "--classes", "all", "--output", tmp_path / "pack", "--part-mib", 1.5,
               "--data-root", tmp_path / "data", "--unverified-data")
    assert proc.returncode == 0, proc.stderr
    parts = sorted(p.name for p in (tmp_path / "pack").glob("part-*"))
    device = tmp_path / "device"  # what stays on the GPU machine between commands
    for n, part in enumerate(parts, 1):  # one command per part: the part and the manifest travel
        carried = tmp_path / f"carry{n}"
        carried.mkdir()
        for name in ("manifest.json", part):
            (carried / name).write_bytes((tmp_path / "pack" / name).read_bytes())
        proc = lease_script("receive", carried, device / "data")
        assert proc.returncode == (0 if n == len(parts) else 1), proc.stdout + proc.stderr
        if n < len(parts):
            assert f"missing: {', '.join(parts[n:])}; carry" in proc.stderr
    out = tmp_path / "out"
    # 420 s: Fig 2's QL run (K = 100, ~400 s on an H200) and nothing else fits
    proc = lease_script("train", device / "data", 420, DRY_RUN="1", OUT=str(out),
                        RUNS_DIR=str(device / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "machine.txt", "plan.txt", "records.tar.gz"]
    assert "1. Fig 2 at gpu-short" in (out / "plan.txt").read_text()

    laptop = tmp_path / "laptop"
    added = import_records(out / "records.tar.gz", laptop)
    assert len(added) == 1 and added[0].startswith("ql-all100-wrn10-1-")
    from ccql_utils.execution import store as runs
    from ccql_utils.figures.registry import FIGURES

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded to redraw finished runs")
    monkeypatch.setattr(runs, "load_cifar100", no_data)
    result = FIGURES["k100"].run(preset="gpu-short", data_root=tmp_path / "pack", verify_data=False,
                                 runs_dir=laptop, progress=False, train=False,
                            **{k: v for k, v in DRY_RUN.items()})
    assert result.runs["QL", 0].finished and result.missing() == ["CE", "CCQL"]
    assert "NOT YET TRAINED: CE, CCQL" in result.caption()
    table = result.table().set_index("run")
    assert table.loc["QL", "state"] == "finished" and table.loc["CE", "state"] == "absent"
    trained = pd.read_csv(next((device / "runs").glob("ql-all100-*")) / "metrics.csv")
    pd.testing.assert_frame_equal(result.runs["QL", 0].history, trained)


# ----------------------------------------------------------------------------- CPU refusals
def test_paper_scale_runs_are_refused_on_a_cpu_in_seconds_unless_forced(tmp_path, capsys):
    proc = cli("run", "k100", "--preset", "gpu-short", "--runs-dir", tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "would take about" in proc.stderr and "not trained: CE, QL, CCQL" in proc.stderr
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing created
    proc = cli("train", "--loss", "ql", "--classes", "all", "--runs-dir", tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--device cpu" in proc.stderr
    forced = experiment_configs("k100", "gpu-short", device="cpu")["QL"]
    check_cpu_time([forced])  # asked for: a warning with the estimate, no refusal
    assert "would take about 68 h" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not training them"):
        check_cpu_time([replace(forced, device="auto")])
    check_cpu_time([experiment_configs("k25_random", "quick")["QL"]])  # minutes: no word


def test_clean_training_accuracy_every_n_epochs_and_at_the_end(synthetic_data, tmp_path):
    from tests.conftest import tiny_config
    run = obtain_one(run_context(tmp_path, synthetic_data), tiny_config(epochs=3, clean_train_eval=2, train_per_class=10))
    assert run.history.train_clean_acc.isna().tolist() == [True, False, False]
    assert tiny_config(clean_train_eval=1).resolved().clean_train_eval is True  # one identity
    assert tiny_config(clean_train_eval=1).run_id() == tiny_config(clean_train_eval=True).run_id()
    with pytest.raises(ValueError, match="clean_train_eval"):
        tiny_config(clean_train_eval=-1).resolved()
