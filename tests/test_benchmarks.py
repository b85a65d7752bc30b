"""The benchmark script (benchmarks/bench.py): its CPU dry run of every part, fed the K = 25 subset
packed as the GPU machine receives it (`python -m ccql_utils pack`), and its pure helpers.

The dry run is one subprocess, as on the GPU machine, so its torch thread count and compiled
graphs stay out of this process; all its checks are one test, so that pytest-xdist runs it once.
benchmarks/ is not a package: the script loads by path.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ccql_utils.core import train
from ccql_utils.core.data import load_cifar100, make_subset, random_classes, write_synthetic_cifar100
from ccql_utils.core.packs import pack_subset
from ccql_utils.figures.presets import experiment_configs

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"
spec = importlib.util.spec_from_file_location("bench", BENCH)
bench = sys.modules["bench"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_synthetic")
    write_synthetic_cifar100(root, train_per_class=3, test_per_class=2, seed=1)
    return load_cifar100(root, verify=False, download=False)


def test_dry_run_measures_every_part_into_one_record(small_data, tmp_path):
    npz = pack_subset(small_data, tmp_path / "k25.npz", random_classes(25, 0))  # as on a GPU node
    env = {**{k: v for k, v in os.environ.items() if k != "OUT"}, "OMP_NUM_THREADS": "1"}  # toy sizes: a thread each
    proc = subprocess.run([sys.executable, str(BENCH), "--dry-run", "--data-root", str(npz), "--out",
                           str(tmp_path / "out"), "--stem", "dry", "--commit", "abc"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    record = json.loads((tmp_path / "out" / "dry.json").read_text())
    t = record["tables"]
    assert record["errors"] == [] and record["notes"] == [] and record["meta"]["environment"]["commit"] == "abc"
    assert set(t) == {"device", "flops", "throughput", "ratios", "data", "overhead", "epochs", "checkpoint",
                      "estimates", "profile", "families", "top_kernels", "stacked", "stacked_data", "concurrency",
                      "compile", "sweep", "sweep_runs"}
    assert {name.split()[0] for name in record["seconds"]} == set(bench.PARTS)
    # throughput: every model x batch x variant, and the baseline; MFU needs a GPU's peak
    assert sorted((r["path"], r["batch"], r["variant"], r["compile"]) for r in t["throughput"]) == sorted(
        [("ours", b, "eager", False) for b in (16, 32)] + [("ours", b, "compile", True) for b in (16, 32)]
        + [("baseline", b, "baseline", False) for b in (16, 32)])
    assert all(r["images_per_s"] > 0 and r["TFLOP_s"] > 0 and r["MFU_pct"] is None for r in t["throughput"])
    assert [(r["batch"], r["variant"]) for r in t["ratios"]] == [(16, "eager"), (16, "compile"), (32, "eager"),
                                                                 (32, "compile")]
    assert t["data"][0]["ours_over_baseline"] > 0 and t["data"][0]["images"] == 25 * 3
    assert [(r["variant"], r["compile"]) for r in t["overhead"]] == [("eager", False), ("compile", True)]
    assert all(np.isfinite(r["overhead_pct"]) and r["bare_TFLOP_s"] > 0 for r in t["overhead"])
    lrs = {c.loss: c.lr for c in experiment_configs("k25_random", "tiny").values()}
    assert [(r["variant"], r["loss"], r["lr"], r["epoch"]) for r in t["epochs"]] == [
        ("eager", loss, lrs[loss], e) for loss in ("ce", "ql", "ccql") for e in (1, 2)] + [
        ("compile", "ce", lrs["ce"], e) for e in (1, 2)]
    assert len(t["checkpoint"]) == 4 and all(r["train_images"] == 75 for r in t["epochs"])
    assert any(r["quantity"] == "data path share of a training epoch" for r in t["estimates"])
    assert next(r for r in t["flops"] if r["model"] == "wrn-28-10")["train_GFLOP"] == pytest.approx(31.46, rel=1e-3)
    # profile: no CUDA kernels on a CPU, so all of the wall time is without one
    assert [(r["variant"], r["kernels_launched"], r["gpu_idle_share"]) for r in t["profile"]] == [
        ("eager", 0, 1), ("compile", 0, 1)]
    assert all(r["unprofiled_epoch_s"] > 0 and len(r["warm_up_epochs_s"]) == 2 for r in t["profile"])
    # a stack on a CPU runs eager (StackedTrainer compiles only where the Trainer would)
    assert [(r["variant"], r["runs"], r["compile"], r["vs_alone"] == 1) for r in t["stacked"]] == [
        ("eager", 1, False, True), ("eager", 2, False, False), ("compile", 1, True, True), ("compile", 2, False, False)]
    assert all(r["aggregate_images_per_s"] > 0 and r["vs_alone"] > 0 for r in t["stacked"])
    assert [r["runs"] for r in t["stacked_data"]] == [1, 2, 1, 2] and all(r["speedup"] > 0 for r in t["stacked_data"])
    (c,) = t["concurrency"]
    assert (c["runs"], c["finished"]) == (2, 2) and c["aggregate_images_per_s"] > 0 and c["first_epoch_s"] > 0
    assert [(r["cache"], r["variant"], r["finished"]) for r in t["compile"]] == [("cold", "compile", 1),
                                                                                ("warm", "compile", 1)]
    assert [r["part"] for r in t["sweep"]] == ["alone", "stacked"] and t["sweep"][1]["speedup_vs_alone"] > 0
    assert [(r["part"], r["stacked_runs"], r["state"]) for r in t["sweep_runs"]] == [
        ("alone", 1, "finished")] + [("stacked", 3, "finished")] * 3
    with tarfile.open(tmp_path / "out" / "dry_records.tar.gz") as archive:  # the stacked runs' records
        assert len({Path(m.name).parts[0] for m in archive.getmembers()}) == 3
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
    d = {"title": "t", "meta": {"device": "cpu", "arguments": {"a": 1}}, "notes": ["n"], "errors": [], "seconds": {},
         "tables": {"rows": [{"name": "x", "rate": 12345.6, "ok": True, "peak": None, "times_s": [1, 2]},
                             {"name": "y", "rate": 0.01234, "ok": False, "peak": 3.0, "times_s": [3]}],
                    "ratios": []}}  # an empty table (its parts did not run) is left out
    md = bench.markdown(d)
    assert "ratios" not in md
    assert md.count("## rows") == 1 and "| name | rate | ok | peak |\n| --- | ---: | --- | ---: |" in md
    assert "| x | 12,346 | yes | - |" in md and "| y | 0.0123 | no | 3.00 |" in md
    assert "times_s" not in md and "- arguments: {'a': 1}" in md and "## notes\n\n- n" in md


def test_estimates_extrapolate_whole_runs_from_the_first_variants_steady_epochs():
    def epoch(e, train, ev, variant="eager"):
        return {"variant": variant, "epoch": e, "train_s": train, "eval_s": ev, "train_images": 100}
    slow = [epoch(e, 50.0, 5.0, "compile") for e in (1, 2, 3)]  # another variant: not in the estimates
    tables = {"epochs": [epoch(1, 10.0, 2.0), epoch(2, 1.0, 0.2), epoch(3, 1.0, 0.2)] + slow,
              "throughput": [{"path": "ours", "compile": True, "warmup_s": 5.0, "times_s": [1.0, 1.0],
                              "images_per_s": 50.0}],
              "checkpoint": [{"write_s": 0.5}], "data": [{"path": "ours: ...", "epoch_s": 0.1, "images": 100}]}
    runs = {"K = 25": (200, 1, 5), "K = 100": (10, 4, 10)}  # epochs, images per epoch x, checkpoint every
    got = {r["quantity"]: r["value"] for r in bench.estimates(tables, runs)}
    assert got["steady epoch, train + eval"] == pytest.approx(1.2)  # the compile variant's epoch left out
    assert got["first epoch's extra time (if compiled: the last-batch and eval graphs)"] == pytest.approx(10.8)
    minutes = (200 * 1.2 + 10.8 + 4.0) / 60  # steady epochs + first-epoch graphs + the full-batch graph
    assert got["K = 25, 200 epochs, extrapolated"] == pytest.approx(minutes)
    assert got["K = 25, the same with a checkpoint every 5 epochs"] == pytest.approx(minutes + 40 * 0.5 / 60)
    assert got["K = 100, 10 epochs, extrapolated"] == pytest.approx((10 * 4 * 1.2 + 14.8) / 60)
    assert got["K = 25, training only, at the compiled throughput rate"] == pytest.approx(200 * 100 / 50 / 60)
    assert got["data path share of a training epoch"] == pytest.approx(10.0)
    assert bench.estimates({"epochs": [epoch(1, 1.0, 1.0)]}, {}) == []  # no steady epoch, no estimate


def test_mfu_ratios_and_speedups_follow_their_definitions():
    flops = [{"model": "wrn-28-10", "train_GFLOP": 31.46}]
    row = bench.with_rates({"model": "wrn-28-10", "images_per_s": 10_000.0}, flops, 790e12)
    assert row["TFLOP_s"] == pytest.approx(314.6) and row["MFU_pct"] == pytest.approx(39.82, abs=0.01)
    assert bench.with_rates({"model": "wrn-28-10", "images_per_s": 1.0}, flops, None)["MFU_pct"] is None
    bare = bench.with_rates({"model": "wrn-28-10", "bare_images_per_s": 10_000.0}, flops, 790e12, "bare_")
    assert bare["bare_MFU_pct"] == pytest.approx(39.82, abs=0.01) and "MFU_pct" not in bare
    rows = [{"path": p, "variant": v, "model": "m", "batch": b, "images_per_s": x}
            for p, v, b, x in (("ours", "eager", 128, 300.0), ("baseline", "baseline", 128, 100.0),
                               ("ours", "compile", 128, 400.0), ("ours", "eager", 256, 500.0))]
    assert [(r["variant"], r["ours_over_baseline"]) for r in bench.ratios(rows)] == [("eager", 3.0), ("compile", 4.0)]
    stack = [{"model": m, "variant": v, "runs": n, "aggregate_images_per_s": x}
             for m, v, n, x in (("a", "eager", 1, 10.0), ("a", "eager", 4, 30.0), ("a", "compile", 4, 80.0),
                                ("a", "compile", 1, 20.0), ("b", "eager", 2, 5.0))]
    assert [r["vs_alone"] for r in bench.vs_alone(stack)] == [1.0, 3.0, 4.0, 1.0, None]


def test_variants_parse_into_trainer_settings():
    assert bench.variant("eager") == {"compile": False, "dynamic": False, "fused": False, "compiled_step": False}
    assert bench.variant("compile+dynamic") == {"compile": True, "dynamic": None, "fused": False,
                                                "compiled_step": False}
    assert bench.variant("reduce-overhead+fused+optimizer") == {"compile": "reduce-overhead", "dynamic": False,
                                                                "fused": True, "compiled_step": True}
    with pytest.raises(ValueError, match="unknown variant word"):
        bench.variant("compile+fast")


def test_make_trainer_builds_each_variant_and_restores_the_compile_setting(small_data, monkeypatch):
    seen = []

    class Trainer:  # records what the real one would be built with
        def __init__(self, config, data, run_dir, progress):
            seen.append((config.compile, train.COMPILE_DYNAMIC, Path(run_dir).is_dir()))
            self.model = self.model_fn = torch.nn.Linear(2, 2)
            self.optimizer = self.sgd = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9, nesterov=True)

    monkeypatch.setattr(bench, "Trainer", Trainer)
    cuda, cpu = (bench.run_config("tiny", device=d) for d in ("cuda", "cpu"))
    bench.make_trainer(small_data, cuda, "reduce-overhead+dynamic")
    assert train.COMPILE_DYNAMIC is False  # set for the Trainer's construction only
    plain = bench.make_trainer(small_data, cuda, "compile")
    t = bench.make_trainer(small_data, cpu, "compile+fused+optimizer")
    assert seen == [("reduce-overhead", None, True), (True, False, True), (False, False, True)]
    assert train.COMPILE_DYNAMIC is False and t.model_fn is not t.model  # on a CPU: dynamo's eager backend
    assert plain.optimizer is plain.sgd and "step" not in vars(plain.optimizer)
    g = t.optimizer.param_groups[0]  # a new SGD of the same settings (fused only on CUDA), its step compiled
    assert t.optimizer is not t.sgd and (g["lr"], g["momentum"], g["nesterov"]) == (0.1, 0.9, True)
    assert "step" in vars(t.optimizer)


def test_worker_processes_train_until_one_stop_time(tmp_path, monkeypatch):
    fake = tmp_path / "worker.py"  # the worker's protocol, without torch: ready, stop time, a JSON report
    fake.write_text(textwrap.dedent("""
        import json, sys, time
        time.sleep(0.2 * int(sys.argv[sys.argv.index("--steps") + 1]))  # a warm-up
        ready = time.time()
        print("ready", flush=True)
        stop = float(sys.stdin.readline())
        time.sleep(max(0.0, stop - time.time()))  # the training
        print(json.dumps({"first_epoch_s": ready, "images_per_s": stop}))  # the times, in place of rates
    """))
    monkeypatch.setattr(bench, "__file__", str(fake))
    a = SimpleNamespace(device="cpu", preset="tiny", steps=2, batches=[16, 32])
    row = bench.processes(a, "root", "wrn-10-1", "eager", 3, 0.5)
    stops, last_ready = row["per_process_images_per_s"], row["first_epoch_s"]
    assert (row["runs"], row["finished"]) == (3, 3) and len(set(stops)) == 1  # one stop time for all
    assert row["aggregate_images_per_s"] == pytest.approx(3 * stops[0])
    assert 0.5 <= stops[0] - last_ready < 3 and 0.9 < row["wall_s"] < 10  # 0.5 s after the last was ready


def test_baseline_dataset_serves_what_torchvisions_cifar100_serves(small_data):
    import torchvision
    import torchvision.transforms as T
    from ccql_utils.core.data import CIFAR100_MEAN, CIFAR100_STD
    subset = make_subset(small_data, range(25))
    dataset = bench.baseline_loader(subset, 4, 0, torch.device("cpu")).dataset
    # torchvision's own __getitem__ on the attributes its CIFAR100 sets (HWC uint8 data, int targets),
    # with the augmentation public WideResNet scripts use
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    stock = SimpleNamespace(data=subset.train_images.transpose(0, 2, 3, 1), transform=transform,
                            targets=[int(y) for y in subset.train_labels], target_transform=None)
    assert len(dataset) == len(subset.train_labels)
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
    assert not re.search(r"\b(lr|momentum|weight_decay)\s*=\s*[0-9.]", BENCH.read_text())  # no hard-coded values
    assert set(bench.DRY_RUN) <= {action.dest for action in bench.parser()._actions}  # each names an option


def test_kernels_sort_into_the_families_the_records_report():
    assert bench.family("sm90_xmma_wgrad_indexed_implicit_gemm_bf16bf16_bf16f32_f32_nhwckrsc_nhwc") == "convolution"
    assert bench.family("void at::native::batch_norm_collect_statistics_channels_last_kernel<>") == "batchnorm"
    assert bench.family("void cudnn::bn_bw_1C11_singleread<float, 512, true, 1, 2, 0>") == "batchnorm"
    assert bench.family("void at::native::multi_tensor_apply_kernel<TensorListMetadata<3>>") == "optimizer"
    assert bench.family("void at::native::vectorized_elementwise_kernel<8, CUDAFunctor_add>") == \
        "elementwise (relu, add, ...)"
    assert bench.family("void at::native::index_kernel<>") == "other"


def test_kernel_summary_counts_each_kernel_once():
    cuda, cpu = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU

    def event(key, us, count=10, device=cuda):
        return SimpleNamespace(key=key, device_type=device, device_time_total=us, count=count)
    events = [event("sm90_xmma_fprop_implicit_gemm", 600e3), event("void at::native::batch_norm_kernel", 300e3),
              event("void multi_tensor_apply_kernel", 100e3),
              event("Optimizer.step#SGD.step", 100e3, 1),  # an annotation spanning the kernel above
              event("aten::cudnn_convolution", 600e3, device=cpu)]  # the op that launched the first
    tables = bench.kernel_summary(SimpleNamespace(key_averages=lambda: events), 2.0, "eager")
    assert tables["profile"] == {"variant": "eager", "wall_s": 2.0, "kernel_s": pytest.approx(1.0),
                                 "kernels_launched": 30, "gpu_idle_share": pytest.approx(0.5)}
    assert [(r["family"], r["s"]) for r in tables["families"]] == [("convolution", pytest.approx(0.6)),
                                                                   ("batchnorm", pytest.approx(0.3)),
                                                                   ("optimizer", pytest.approx(0.1))]
    assert [r["name"] for r in tables["top_kernels"]][0] == "sm90_xmma_fprop_implicit_gemm"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_refuses_a_machine_without_cuda(capsys):
    assert bench.main(["--device", "cuda", "--data-root", "unused.npz"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
