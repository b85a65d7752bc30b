"""The benchmarks (benchmarks/): the GPU check's dry run, the CPU benchmark's smallest settings,
the npz that carries the K = 25 subset to the GPU machine, and the torchvision baseline's dataset.

The two script runs are subprocesses, as on the GPU machine (where the package is not
installed and the scripts put the repository on sys.path), and so that the dry run's
torch.compile patch stays out of this process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ccql_utils.data import load_cifar100, make_subset, select_classes, write_synthetic_cifar100

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = PROJECT_ROOT / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import bench  # noqa: E402
import prepare_gpu_data  # noqa: E402


def _run(args, tmp_path, timeout=180):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHONPATH"] = ""  # the scripts must find the package themselves
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def test_gpu_check_dry_run_runs_the_whole_flow(tmp_path):
    out = tmp_path / "out"
    proc = _run([str(BENCH_DIR / "gpu_check.py"), "--dry-run", "--out", str(out), "--stem", "dry",
                 "--budget-s", "1000"], tmp_path)
    record = json.loads((out / "dry.json").read_text())
    assert (out / "dry.md").read_text().startswith("# gpu_check-dryrun")
    assert record["errors"] == []
    assert record["settings"]["dry_run"] is True
    kinds = {(r["path"], r["compile"]) for r in record["throughput"]}
    assert kinds == {("ours", False), ("ours", True), ("baseline", False)}
    assert all(r["images_per_s"] > 0 for r in record["throughput"])
    assert record["data_path"]["ratio"] > 0 and record["data_path"]["epoch_share"] > 0
    assert np.isfinite(record["overhead"]["overhead"])
    epochs = record["epochs"]
    assert set(epochs["runs"]) == {"ce", "ql", "ccql"}
    for run in epochs["runs"].values():
        assert len(run["rows"]) == 2 and run["finite"]
    assert epochs["est_200_epochs_min"] > 0 and epochs["checkpoint_s"] >= 0
    assert any(g["goal"].startswith("ce: loss falls") for g in record["goals"])
    assert record["flops"]["wrn-28-10"]["train"] == pytest.approx(31.46e9, rel=0.01)
    assert "ours/baseline" in proc.stdout and "wrote" in proc.stdout


def test_cpu_benchmark_smallest_settings(tmp_path):
    out = tmp_path / "out"
    _run([str(BENCH_DIR / "bench.py"), "--preset", "smoke", "--parts", "throughput,data",
          "--out", str(out), "--stem", "smoke"], tmp_path)
    record = json.loads((out / "smoke.json").read_text())
    assert record["errors"] == [] and record["device_type"] == "cpu"
    assert {r["path"] for r in record["throughput"]} == {"ours", "baseline"}
    assert record["ratios"][0]["ratio"] > 0
    assert record["data_path"]["ours"]["images_per_s"] > 0
    assert [g["goal"] for g in record["goals"]][0].startswith("on-device batch augmentation")
    assert record["environment"]["torch"] == torch.__version__
    assert "Training throughput" in (out / "smoke.md").read_text()


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_synthetic")
    write_synthetic_cifar100(root, train_per_class=3, test_per_class=2, seed=1)
    return root, load_cifar100(root, verify=False, download=False)


def test_npz_round_trip_gives_the_same_subset(small_data, tmp_path):
    _, data = small_data
    path = prepare_gpu_data.save_npz(data, tmp_path / "k25.npz")
    meta = prepare_gpu_data.npz_meta(path)
    assert meta["k"] == 25 and meta["verified"] is False and len(meta["class_names"]) == 25
    loaded = prepare_gpu_data.load_npz(path)
    classes = select_classes("random", data, 25, 0)
    assert select_classes("random", loaded, 25, 0) == classes
    a, b = make_subset(data, classes), make_subset(loaded, classes)
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert a.class_names == b.class_names == tuple(meta["class_names"])
    assert len(loaded.train_images) == 25 * 3  # only the packed classes travel


def test_npz_with_altered_pixels_is_refused(small_data, tmp_path):
    _, data = small_data
    path = prepare_gpu_data.save_npz(data, tmp_path / "k25.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["train_images"][0, 0, 0, 0] ^= 1
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="sha256"):
        prepare_gpu_data.load_npz(path)


def test_baseline_dataset_is_torchvisions_cifar100_without_the_md5_check(small_data):
    import torchvision
    root, data = small_data
    with pytest.raises(RuntimeError):  # the stock class refuses files whose md5 differ
        torchvision.datasets.CIFAR100(str(root), train=True, download=False)
    cls = bench.baseline_dataset_class()
    from_files = cls(str(root), train=True, transform=bench.baseline_transform())
    from_arrays = cls.from_arrays(data.train_images, data.train_fine, bench.baseline_transform())
    assert isinstance(from_arrays, torchvision.datasets.CIFAR100)
    assert len(from_files) == len(from_arrays) == len(data.train_fine)
    assert np.array_equal(from_files.data, from_arrays.data) and from_files.targets == from_arrays.targets
    torch.manual_seed(0)
    x1, y1 = from_files[5]
    torch.manual_seed(0)
    x2, y2 = from_arrays[5]
    assert y1 == y2 and x1.shape == (3, 32, 32) and torch.equal(x1, x2)


@pytest.mark.realdata
def test_packed_real_subset_matches_the_full_data(real_data, tmp_path):
    path = prepare_gpu_data.save_npz(real_data, tmp_path / "k25.npz")
    assert path.stat().st_size < 50 * 2**20
    loaded = prepare_gpu_data.load_npz(path)
    assert loaded.verified
    classes = select_classes("random", real_data, 25, 0)
    a, b = make_subset(real_data, classes), make_subset(loaded, classes)
    assert len(a.train_labels) == 12_500 and len(a.test_labels) == 2_500
    for name in ("train_images", "train_labels", "test_images", "test_labels"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
