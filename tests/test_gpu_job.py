"""The GPU job script, dry-run on the CPU: it trains an experiment on a packed subset and leaves
records that another machine imports and redraws without training or data."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from ccql_utils.core.data import load_cifar100, random_classes, write_synthetic_cifar100
from ccql_utils.core.packs import pack_subset
from ccql_utils.execution.records import import_records

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_gpu_job_dry_run_leaves_records_that_redraw_elsewhere(tmp_path, monkeypatch):
    write_synthetic_cifar100(tmp_path / "data", train_per_class=12, test_per_class=6)
    data = load_cifar100(tmp_path / "data", verify=False, download=False)
    npz = pack_subset(data, tmp_path / "k25.npz", random_classes(25, 0))
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "scripts/gpu_job.sh", "k25_random", str(npz)], cwd=PROJECT_ROOT,
                          env={**os.environ, "DRY_RUN": "1", "OUT": str(out), "PY": sys.executable},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "machine.txt").read_text() and "CE" in (out / "log.txt").read_text()
    with tarfile.open(out / "records.tar.gz") as tar:
        names = sorted(tar.getnames())
    assert len(names) == 9 and all(n.split("/")[1] in ("config.json", "metrics.csv", "status.json")
                                   for n in names)  # three runs, no checkpoints

    from ccql_utils.execution import store as runs
    from ccql_utils.figures.registry import FIGURES
    laptop = tmp_path / "laptop"
    assert len(import_records(out / "records.tar.gz", laptop)) == 3

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded to redraw finished runs")
    monkeypatch.setattr(runs, "load_cifar100", no_data)
    redrawn = FIGURES["k25_random"].run(preset="tiny", data_root=npz, verify_data=False,
                                        runs_dir=laptop, progress=False, device="cpu")
    trained = FIGURES["k25_random"].run(preset="tiny", data_root=npz, verify_data=False,
                                        runs_dir=out / "runs", progress=False, device="cpu")
    assert all(run.finished for run in redrawn.runs.values())
    pd.testing.assert_frame_equal(redrawn.data(), trained.data())


GPU_RECORDS = PROJECT_ROOT / "results" / "gpu-short-h200-2026-11-27"


@pytest.mark.parametrize("experiment, figure", [("k25_random", "fig1_k25_random_gpu-short"),
                                                ("mammals_vs_random", "fig3_mammals_vs_random_gpu-short")])
def test_committed_gpu_records_redraw_the_committed_figure_data_without_training_or_data(
        experiment, figure, tmp_path, monkeypatch):
    from ccql_utils.execution import store as runs
    from ccql_utils.figures.registry import FIGURES
    import_records(GPU_RECORDS, tmp_path / "runs")

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded to redraw finished runs")
    monkeypatch.setattr(runs, "load_cifar100", no_data)
    result = FIGURES[experiment].run(preset="gpu-short", runs_dir=tmp_path / "runs", progress=False,
                                     device="cpu", train=False)
    # Fig 3's controls (CE and CCQL on the mammals) wait in the GPU queue
    assert result.missing() == ([] if experiment == "k25_random" else ["CE, mammals", "CCQL, mammals"])
    assert all(run.finished and run.status["device"] == "NVIDIA H200" for run in result.runs.values()
               if run.state != "absent")
    committed = pd.read_csv(PROJECT_ROOT / "figures" / f"{figure}.csv")
    pd.testing.assert_frame_equal(result.data().reset_index(drop=True), committed,
                                  check_dtype=False, rtol=1e-12)
