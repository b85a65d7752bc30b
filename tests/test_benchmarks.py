"""The benchmark script (benchmarks/bench.py): its CPU dry run, its pure helpers, the baseline's
dataset, fed the K = 25 subset packed as the GPU machine receives it (`python -m ccql_utils pack`).

The dry run is a subprocess, as on the GPU machine, so its torch thread count and compiled
graphs stay out of this process. benchmarks/ is not a package: its scripts load by path.
"""
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ccql_utils.data import load_cifar100, make_subset, random_classes, write_synthetic_cifar100
from ccql_utils.packs import pack_subset
from ccql_utils.presets import experiment_configs

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


bench = _script("bench")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_synthetic")
    write_synthetic_cifar100(root, train_per_class=3, test_per_class=2, seed=1)
    return root, load_cifar100(root, verify=False, download=False)


def test_dry_run_measures_every_part_into_one_record(small_data, tmp_path):
    npz = pack_subset(small_data[1], tmp_path / "k25.npz", random_classes(25, 0))  # as on a GPU node
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "bench.py"), "--preset", "dry-run", "--data-root", str(npz),
                           "--out", str(tmp_path / "out"), "--stem", "dry"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((tmp_path / "out" / "dry.json").read_text())
    t = record["tables"]
    assert record["errors"] == [] and record["notes"] == []
    assert set(t) == {"device", "flops", "throughput", "data", "overhead", "epochs", "checkpoint", "scaling",
                      "ratios", "estimates"}
    assert {(r["path"], r["compile"]) for r in t["throughput"]} == {("ours", False), ("ours", True),
                                                                    ("baseline", False)}
    assert all(r["images_per_s"] > 0 and r["TFLOP_s"] > 0 for r in t["throughput"] + t["scaling"])
    assert [r["ours_over_baseline"] > 0 for r in t["ratios"]] == [True, True]
    assert t["data"][0]["ours_over_baseline"] > 0 and np.isfinite(t["overhead"][0]["overhead_pct"])
    lrs = {c.loss: c.lr for c in experiment_configs("k25_random", "tiny").values()}
    assert {(r["loss"], r["lr"]) for r in t["epochs"]} == set(lrs.items())
    assert [r["epoch"] for r in t["epochs"]] == [1, 2] * 3 and len(t["checkpoint"]) == 3
    assert any(r["quantity"] == "data path share of a training epoch" for r in t["estimates"])
    wrn28 = next(r for r in t["flops"] if r["model"] == "wrn-28-10")
    assert wrn28["train_GFLOP"] == pytest.approx(31.46, rel=1e-3)
    md = (tmp_path / "out" / "dry.md").read_text()
    assert md.startswith("# dry") and md.count("## throughput") == 1 and md in proc.stdout


def test_part_runner_skips_what_the_budget_cannot_fit_and_records_failures(tmp_path):
    rec, ran = bench.Record(tmp_path, "r", {}, budget_s=30, parts={"a", "b", "c"}), []
    rec.part("a first", lambda: {"t": {"x": 1.0}})
    rec.part("b too long", lambda: ran.append("b") or {}, need_s=60)
    rec.part("c broken", lambda: {"t": {"x": 1 / 0}})
    rec.part("d not asked for", lambda: ran.append("d") or {})
    rec.part("a last", lambda: {"t": [{"x": float("nan")}]})
    assert ran == []  # b would not fit the budget left, d was not asked for
    assert rec.data["tables"]["t"][0] == {"x": 1.0} and len(rec.data["tables"]["t"]) == 2
    assert len(rec.data["notes"]) == 1 and rec.data["notes"][0].startswith("b too long: skipped")
    assert [e["part"] for e in rec.data["errors"]] == ["c broken"]
    assert "ZeroDivisionError" in rec.data["errors"][0]["error"]
    assert set(rec.data["seconds"]) == {"a first", "c broken", "a last"}
    written = json.loads((tmp_path / "r.json").read_text())  # strict JSON: NaN is written as null
    assert written["tables"]["t"] == [{"x": 1.0}, {"x": None}]


def test_markdown_renders_each_table_once_with_its_scalar_columns():
    d = {"title": "t", "meta": {"device": "cpu", "preset": {"a": 1}}, "notes": ["n"], "errors": [], "seconds": {},
         "tables": {"rows": [{"name": "x", "rate": 12345.6, "ok": True, "peak": None, "times_s": [1, 2]},
                             {"name": "y", "rate": 0.01234, "ok": False, "peak": 3.0, "times_s": [3]}],
                    "ratios": []}}  # an empty table (its parts did not run) is left out
    md = bench.markdown(d)
    assert "ratios" not in md
    assert md.count("## rows") == 1 and "| name | rate | ok | peak |\n| --- | ---: | --- | ---: |" in md
    assert "| x | 12,346 | yes | - |" in md and "| y | 0.0123 | no | 3.00 |" in md
    assert "times_s" not in md and "- preset: {'a': 1}" in md and "## notes\n\n- n" in md


def test_estimates_extrapolate_whole_runs_from_steady_epochs():
    epoch = lambda e, train, ev: {"epoch": e, "train_s": train, "eval_s": ev, "train_images": 100}  # noqa: E731
    tables = {"epochs": [epoch(1, 10.0, 2.0), epoch(2, 1.0, 0.2), epoch(3, 1.0, 0.2)],
              "throughput": [{"path": "ours", "compile": True, "warmup_s": 5.0, "times_s": [1.0, 1.0],
                              "images_per_s": 50.0}],
              "checkpoint": [{"write_s": 0.5}], "data": [{"path": "ours: ...", "epoch_s": 0.1, "images": 100}]}
    runs = {"K = 25": (200, 1, 5), "K = 100": (10, 4, 10)}  # epochs, images per epoch x, checkpoint every
    got = {r["quantity"]: r["value"] for r in bench.estimates(tables, runs)}
    assert got["steady epoch, train + eval"] == pytest.approx(1.2)
    assert got["first epoch's extra time (if compiled: the last-batch and eval graphs)"] == pytest.approx(10.8)
    minutes = (200 * 1.2 + 10.8 + 4.0) / 60  # steady epochs + first-epoch graphs + the full-batch graph
    assert got["K = 25, 200 epochs, extrapolated"] == pytest.approx(minutes)
    assert got["K = 25, the same with a checkpoint every 5 epochs"] == pytest.approx(minutes + 40 * 0.5 / 60)
    assert got["K = 100, 10 epochs, extrapolated"] == pytest.approx((10 * 4 * 1.2 + 14.8) / 60)
    assert got["K = 25, training only, at the compiled throughput rate"] == pytest.approx(200 * 100 / 50 / 60)
    assert got["data path share of a training epoch"] == pytest.approx(10.0)
    assert bench.estimates({"epochs": [epoch(1, 1.0, 1.0)]}, {}) == []  # no steady epoch, no estimate


def test_mfu_and_ratios_follow_their_definitions():
    flops = [{"model": "wrn-28-10", "train_GFLOP": 31.46}]
    row = bench.with_rates({"model": "wrn-28-10", "images_per_s": 10_000.0}, flops, 790e12)
    assert row["TFLOP_s"] == pytest.approx(314.6) and row["MFU_pct"] == pytest.approx(39.82, abs=0.01)
    assert bench.with_rates({"model": "wrn-28-10", "images_per_s": 1.0}, flops, None)["MFU_pct"] is None
    rows = [{"path": p, "model": "m", "batch": 128, "compile": c, "images_per_s": v}
            for p, c, v in (("ours", False, 300.0), ("baseline", False, 100.0), ("ours", True, 400.0))]
    assert [r["ours_over_baseline"] for r in bench.ratios(rows)] == [3.0, 4.0]


def test_baseline_dataset_serves_what_torchvisions_cifar100_serves(small_data):
    import torchvision
    subset = make_subset(small_data[1], range(25))
    dataset = bench.baseline_loader(subset, 4, 0, torch.device("cpu")).dataset
    # torchvision's own __getitem__ on the attributes its CIFAR100 sets (HWC uint8 data, int targets)
    stock = SimpleNamespace(data=subset.train_images.transpose(0, 2, 3, 1), transform=dataset.transform,
                            targets=[int(y) for y in subset.train_labels], target_transform=None)
    for i in (0, 7, len(dataset) - 1):
        torch.manual_seed(i)
        x, y = dataset[i]
        torch.manual_seed(i)
        x_ref, y_ref = torchvision.datasets.CIFAR100.__getitem__(stock, i)
        assert x.shape == (3, 32, 32) and torch.equal(x, x_ref) and y == y_ref and isinstance(y, int)


def test_training_settings_come_from_the_presets_not_the_benchmark():
    config = bench.run_config("paper", "ccql", "wrn-16-2", batch_size=256)
    paper = next(c for c in experiment_configs("k25_random", "paper").values() if c.loss == "ccql")
    assert (config.depth, config.width, config.batch_size) == (16, 2, 256)
    assert (config.lr, config.epochs, config.momentum, config.weight_decay) == \
        (paper.lr, paper.epochs, paper.momentum, paper.weight_decay)
    source = (BENCH_DIR / "bench.py").read_text()
    assert not re.search(r"\b(lr|momentum|weight_decay)\s*=\s*[0-9.]", source)  # no hard-coded values
    with pytest.raises(dataclasses.FrozenInstanceError):  # overrides make a copy, never edit the table
        bench.PRESETS["cpu"].budget_s = 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_preset_refuses_a_machine_without_cuda(capsys):
    assert bench.main(["--preset", "gpu", "--data-root", "unused.npz"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_stacked_data_times_both_paths_over_the_same_batches():
    stacked_data = _script("stacked_data")
    row = stacked_data.compare(3, 4, torch.device("cpu"), steps=2, images=20)
    assert (row["runs"], row["batch"]) == (3, 4)
    assert row["per_run_loaders_ms"] > 0 and row["stacked_loader_ms"] > 0
    assert row["speedup"] == row["per_run_loaders_ms"] / row["stacked_loader_ms"]
    with pytest.raises(ValueError, match="fewer than the 4 batches of 8"):
        stacked_data.compare(3, 8, torch.device("cpu"), steps=2, images=20)


def test_gpu_round2_sorts_the_h200_kernels_into_the_families_the_record_reports():
    round2 = _script("gpu_round2")
    assert round2.family("sm90_xmma_wgrad_indexed_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "convolution"
    assert round2.family("void at::native::batch_norm_collect_statistics_channels_last_kernel<>") == "batchnorm"
    assert round2.family("void at::native::multi_tensor_apply_kernel<TensorListMetadata<3>>") == "optimizer"
    assert round2.family("void at::native::vectorized_elementwise_kernel<8, CUDAFunctor_add>") == \
        "elementwise (relu, add, ...)"


def test_gpu_round2_dry_run_writes_its_record_part_by_part(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "gpu_round2.py"), "--dry-run", "--parts",
                           "epoch", "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "gpu_round2.json").read_text())
    assert record["epoch"]["train_images"] == 25 * 4 and len(record["epoch"]["epochs"]) == 3
    assert record["epoch"]["full_batch_images_per_s"] > 0
    assert "profile" not in record and "optimizer" not in record


def test_gpu_round4_dry_run_stacks_the_sweep_and_times_each_compile_variant(small_data, tmp_path):
    root, data = small_data
    pack = pack_subset(data, tmp_path / "k25.npz", random_classes(25, 0))
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "gpu_round4.py"), "--dry-run", "--unverified-data",
                           "--data-root", str(pack), "--parts", "sweep,epochs", "--seeds", "1",
                           "--commit", "abc"], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OUT": str(tmp_path / "out")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "gpu_round4.json").read_text())
    tables = record["tables"]
    assert [r["part"] for r in tables["sweep"]] == ["alone", "stacked"] and not record["errors"]
    assert tables["sweep"][1]["speedup_vs_alone"] > 0
    stacked = [r for r in tables["sweep_runs"] if r["part"] == "stacked"]
    assert len(stacked) == 3 and {r["stacked_runs"] for r in stacked} == {3}
    assert {r["state"] for r in tables["sweep_runs"]} == {"finished"}
    names = [v[0] for v in _script("gpu_round4").EPOCH_VARIANTS]
    assert [r["variant"] for r in tables["epochs"]] == [n for n in names for _ in range(2)]
    assert [r["compile"] for r in tables["epochs"]] == [n != "eager" for n in names for _ in range(2)]
    with tarfile.open(tmp_path / "out" / "gpu_round4_records.tar.gz") as archive:
        assert len({Path(m.name).parts[0] for m in archive.getmembers()}) == 3
    assert record["meta"]["environment"]["commit"] == "abc"


def test_gpu_round5_dry_run_times_both_sgd_steps_and_profiles_eager_and_compiled(small_data, tmp_path):
    root, data = small_data
    pack = pack_subset(data, tmp_path / "k25.npz", random_classes(25, 0))
    proc = subprocess.run([sys.executable, str(BENCH_DIR / "gpu_round5.py"), "--dry-run", "--unverified-data",
                           "--data-root", str(pack)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OUT": str(tmp_path / "out")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "out" / "gpu_round5.json").read_text())
    tables = record["tables"]
    assert not record["errors"]
    assert [r["variant"] for r in tables["epochs"]] == ["eager, foreach SGD"] * 2 + ["eager, fused SGD"] * 2
    assert [r["variant"] for r in tables["profile"]] == ["eager", "compile default, dynamic=False"]
    assert all(r["unprofiled_epoch_s"] > 0 and r["wall_s"] > 0 for r in tables["profile"])
