#!/usr/bin/env python3
"""Training-speed benchmarks of ccql_utils on a CPU or a CUDA GPU: each measurement a part.

Parts (--parts), each adding rows to tables of one record (units in the column names):
  device       the device, and the rate of an n^3 matmul of random data
  flops        forward, backward and training FLOPs per image of each model (meta device)
  throughput   images/s, MFU of Trainer.train_epoch over full batches per model, batch and variant,
               and of a baseline as public WideResNet scripts train (DataLoader + PIL); `ratios`
  data         the data path alone: DeviceLoader vs the baseline's DataLoader
  overhead     Trainer.train_epoch vs a bare loop of its model, loss and optimizer, per variant
  epochs       real epochs on the preset's LR schedule: every loss as the first variant, CE as the
               others; a checkpoint's write; `estimates` of whole runs
  profile      torch.profiler over one steady real training epoch per variant: kernel time by family
  stacked      N runs as one StackedTrainer vs one run alone; their data path, one StackedLoader vs
               N loaders and a concatenation (`stacked_data`)
  concurrency  N processes, each training a small model, on one device at once
  compile      a compiled trainer's first epoch in a fresh process, cold and warm inductor cache
  sweep        Fig 1's runs through the run store: CE seed 0 alone, then all stacked as run_all.sh does
A variant is how the trainer runs, words joined by '+': eager; compile (torch.compile, default mode);
reduce-overhead (CUDA graphs); dynamic (dynamic=None, not train.COMPILE_DYNAMIC); fused (fused SGD);
optimizer (the SGD step compiled too). Runs: ccql_utils.figures.presets' K = 25 random-class runs (class
seed 0). Times: perf_counter between device synchronisations; medians of repeats after a warm-up.
The record is rewritten after every part (Record.part). Commands and records: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository need not be installed

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ccql_utils.core import train  # noqa: E402
from ccql_utils.execution.context import RunContext  # noqa: E402
from ccql_utils.core.data import (CIFAR100_MEAN, CIFAR100_STD, data_source, load_cifar100,  # noqa: E402
                             make_subset, select_classes, write_synthetic_cifar100)
from ccql_utils.core.loader import DeviceLoader, StackedLoader  # noqa: E402
from ccql_utils.figures.presets import experiment_configs, resolve_preset  # noqa: E402
from ccql_utils.provenance import atomic_write_text, describe_device, environment_record  # noqa: E402
from ccql_utils.execution.records import export_records  # noqa: E402
from ccql_utils.execution.scheduler import obtain  # noqa: E402
from ccql_utils.core.stacked import StackedTrainer  # noqa: E402
from ccql_utils.core.train import Trainer  # noqa: E402
from ccql_utils.core.wrn import WideResNet, count_parameters  # noqa: E402

PARTS = ("device", "flops", "throughput", "data", "overhead", "epochs", "profile", "stacked", "concurrency",
         "compile", "sweep")
VARIANT_WORDS = ("eager", "compile", "reduce-overhead", "dynamic", "fused", "optimizer")
# MFU denominator: the dense bf16 matmul rate PyTorch reaches on these cards, 769-798 TFLOP/s
# measured (786 in results/gpu_check-h200-2026-11-27.md), not the datasheet's 989.
PEAK_FLOPS = {"H100": 790e12, "H200": 790e12}
# Kernel families, matched in this order on the lower-cased kernel name that torch.profiler lists.
FAMILIES = (("batchnorm", ("batch_norm", "bn_", "welford", "batchnorm")),
            ("optimizer", ("multi_tensor", "foreach", "fused_sgd", "sgd")),
            ("convolution", ("conv", "cudnn", "xmma", "implicit", "gemm", "wgrad", "dgrad", "fprop", "cutlass",
                             "sm90")),
            ("copy/cast", ("copy", "memcpy", "memset", "cat_", "to_")),
            ("reduction/loss", ("reduce", "softmax", "nll", "sum", "norm")),
            ("elementwise (relu, add, ...)", ("elementwise", "vectorized", "relu", "threshold", "add", "mul",
                                              "unrolled")))
DRY_RUN = dict(device="cpu", preset="tiny", models="wrn-10-1", batch="16,32", steps=2, repeats=2, epochs=2, workers=1,
               variants="eager,compile", stack="1,2", stack_models="wrn-10-1", processes="2", seconds=1.0,
               sweep_preset="tiny", seeds=1, parts=",".join(PARTS))  # --dry-run: every part at toy size
drain = collections.deque(maxlen=0).extend  # consumes an iterator, keeping nothing


class Record:
    """One run's results, written to `<stem>.json` and `<stem>.md` in `out_dir` after every part."""

    def __init__(self, out_dir: Path, stem: str, meta: dict, budget_s: float, parts: set):
        self.out_dir, self.stem, self.budget_s, self.parts = Path(out_dir), stem, budget_s, parts
        self.data = {"title": stem, "meta": meta, "tables": {}, "notes": [], "errors": [], "seconds": {}}
        self.start = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def part(self, name: str, fn, need_s: float = 0.0) -> None:
        """Add fn()'s {table: row or rows}, unless the part's kind (first word of `name`) is not
        asked for or `need_s` exceeds the budget left; an exception is recorded, not raised."""
        if name.split()[0] not in self.parts:
            return
        left = self.budget_s - (time.perf_counter() - self.start)
        if left < need_s:
            self.data["notes"].append(f"{name}: skipped, needs ~{need_s:.0f} s, {left:.0f} s left")
            return
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            for table, rows in fn().items():
                self.data["tables"].setdefault(table, []).extend(rows if isinstance(rows, list) else [rows])
        except Exception as exc:  # a broken part must not lose the others
            self.data["errors"].append({"part": name, "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()})
            print(f"[bench] {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        self.data["seconds"][name] = time.perf_counter() - start
        self.write()

    def write(self) -> None:
        self.data["meta"].update(load_average_end=[round(x, 2) for x in os.getloadavg()],
                                 total_s=time.perf_counter() - self.start)
        strict = json.loads(json.dumps(self.data), parse_constant=lambda _: None)  # NaN -> null
        atomic_write_text(self.out_dir / f"{self.stem}.json", json.dumps(strict, indent=1) + "\n")
        atomic_write_text(self.out_dir / f"{self.stem}.md", markdown(self.data))


def _cell(v) -> str:
    if v is None or isinstance(v, bool):
        return {None: "-", True: "yes", False: "no"}[v]
    if isinstance(v, float) and np.isfinite(v):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def markdown(d: dict) -> str:
    """The record as markdown (its one renderer): meta as a list, each table with its scalar columns."""
    lines = [f"# {d['title']}", ""] + [f"- {k}: {_cell(v) if np.isscalar(v) or v is None else v}"
                                      for k, v in d["meta"].items()] + [""]
    for name, rows in d["tables"].items():
        if not rows:  # e.g. ratios when the parts they derive from did not run
            continue
        cols = [c for c in dict.fromkeys(k for r in rows for k in r)
                if not any(isinstance(r.get(c), (list, dict)) for r in rows)]
        numeric = [all(type(r.get(c)) in (int, float, type(None)) for r in rows) for c in cols]
        lines += [f"## {name}", "", "| " + " | ".join(cols) + " |",
                  "| " + " | ".join("---:" if n else "---" for n in numeric) + " |"]
        lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows] + [""]
    for title, items in (("notes", d["notes"]), ("errors", [f"{e['part']}: `{e['error']}`" for e in d["errors"]]),
                         ("seconds per part", [f"{k}: {v:.1f}" for k, v in d["seconds"].items()])):
        lines += [f"## {title}", ""] + [f"- {i}" for i in items] + [""] if items else []
    return "\n".join(lines)


def time_call(fn, device: torch.device) -> float:
    """Seconds of fn(), the device (CUDA) synchronised before and after."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda _: None)
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values) -> float:
    return float(statistics.median(values)) if len(values) else float("nan")


def variant(name: str) -> dict:
    """The trainer settings a variant name asks for (words joined by '+', module docstring)."""
    words = set(name.split("+"))
    if not words <= set(VARIANT_WORDS):
        raise ValueError(f"unknown variant word(s) {sorted(words - set(VARIANT_WORDS))} in {name!r}")
    return {"compile": "reduce-overhead" if "reduce-overhead" in words else "compile" in words,
            "dynamic": None if "dynamic" in words else False, "fused": "fused" in words,
            "compiled_step": "optimizer" in words}


def run_config(protocol: str, loss: str = "ce", model: str | None = None, **overrides):
    """The K = 25 random-class run of `loss` at ccql_utils preset `protocol` (its LR, schedule,
    data size), with `model` ('wrn-<depth>-<width>') and overrides (None: the preset's) on top."""
    if model:
        overrides["depth"], overrides["width"] = map(int, model.split("-")[1:])
    return next(c for c in experiment_configs("k25_random", protocol, **overrides).values() if c.loss == loss)


def subset_of(data, c):
    return make_subset(data, select_classes(c.classes, data, c.num_classes, c.class_seed), c.train_per_class,
                       c.test_per_class)


def make_trainer(data, config, name: str = "eager") -> Trainer:
    """A Trainer of `config` run as variant `name`, in a throw-away folder, compiled afresh."""
    v, cpu = variant(name), torch.device(config.device).type == "cpu"
    folder = tempfile.TemporaryDirectory(prefix="ccql-bench-")  # removed with the trainer
    if v["compile"] or v["compiled_step"]:
        torch._dynamo.reset()  # no graphs reused from an earlier variant
    kept, train.COMPILE_DYNAMIC = train.COMPILE_DYNAMIC, v["dynamic"]
    try:
        trainer = Trainer(dataclasses.replace(config, compile=not cpu and v["compile"]), data, folder.name,
                          progress=False)
    finally:
        train.COMPILE_DYNAMIC = kept
    trainer.folder = folder
    if cpu and v["compile"]:  # dynamo's 'eager' backend: graph capture, guards, recompilation, no C++ builds
        trainer.model_fn = torch.compile(trainer.model, backend="eager")
    if v["fused"]:  # the same settings; fused: one kernel per step, CUDA only
        g = trainer.optimizer.param_groups[0]
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=g["lr"], momentum=g["momentum"],
                                            weight_decay=g["weight_decay"], nesterov=g["nesterov"], fused=not cpu)
    if v["compiled_step"]:
        trainer.optimizer.step = torch.compile(trainer.optimizer.step, **({"backend": "eager"} if cpu else {}))
    return trainer


def fit_train_loader(trainer: Trainer, steps: int) -> None:
    """An epoch of exactly `steps` full batches (the subset cycled): no smaller last batch, whose
    new shape would recompile inside a timed epoch."""
    src = trainer.train_loader
    index = torch.arange(steps * trainer.config.batch_size, device=src.labels.device) % len(src)
    trainer.train_loader = DeviceLoader(src.images[index].cpu().numpy(), src.labels[index].cpu().numpy(),
                                        src.device, seed=src.seed, channels_last=src.channels_last)


def baseline_loader(subset, batch: int, workers: int, device: torch.device):
    """torchvision's CIFAR100 dataset over the subset (its __getitem__: PIL.Image.fromarray of the HWC
    array, then RandomCrop(32, 4), flip, ToTensor, Normalize) in a DataLoader (shuffle, pin_memory on
    CUDA), as public WideResNet scripts load CIFAR."""
    import torchvision
    import torchvision.transforms as T
    dataset = object.__new__(torchvision.datasets.CIFAR100)  # its file reading skipped: the subset's arrays
    dataset.data, dataset.targets = subset.train_images.transpose(0, 2, 3, 1).copy(), subset.train_labels.tolist()
    dataset.target_transform, dataset.transform = None, T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                       pin_memory=device.type == "cuda")


def device_info(device: torch.device, n: int, reps: int = 10) -> dict:
    """Name, memory, versions, and the rate of an n^3 matmul of random data (TFLOP/s)."""
    info, dtype = {"torch": torch.__version__, "threads": torch.get_num_threads()}, torch.float32
    if device.type == "cuda":
        p, dtype = torch.cuda.get_device_properties(device), torch.bfloat16
        info.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_GiB=p.total_memory / 2**30,
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    time_call(lambda: [a @ b for _ in range(3)], device)
    seconds = time_call(lambda: [a @ b for _ in range(reps)], device)
    info[f"matmul_{n}_{str(dtype)[6:]}_TFLOP_s"] = 2 * n**3 * reps / seconds / 1e12
    return info


def flops_per_image(models, num_classes: int = 25) -> list[dict]:
    """Forward, backward and training GFLOP per image of each model (K-class head)."""
    from torch.utils.flop_counter import FlopCounterMode
    rows = []
    for name in models:
        with torch.device("meta"):
            model = WideResNet(*map(int, name.split("-")[1:]), num_classes)
            x, y = torch.randn(2, 3, 32, 32), torch.randint(0, num_classes, (2,))
        with FlopCounterMode(display=False) as fwd:
            loss = F.cross_entropy(model(x), y)
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
        f, b = fwd.get_total_flops() / 2e9, bwd.get_total_flops() / 2e9
        rows.append({"model": name, "parameters_M": count_parameters(model) / 1e6, "forward_GFLOP": f,
                     "backward_GFLOP": b, "train_GFLOP": f + b})
    return rows


def with_rates(row: dict, flops_rows: list[dict], peak: float | None, at: str = "") -> dict:
    """The row with TFLOP/s, and MFU (% of `peak` FLOP/s; None without a peak), from its images/s
    (`at`: the prefix of those three columns)."""
    gflop = next((r["train_GFLOP"] for r in flops_rows if r["model"] == row["model"]), None)
    if gflop:
        row[at + "TFLOP_s"] = row[at + "images_per_s"] * gflop / 1e3
        row[at + "MFU_pct"] = 1e14 * row[at + "TFLOP_s"] / peak if peak else None
    return row


def _row(path, name, config, precision, layout, workers, steps, times, device, compiled=False) -> dict:
    """A throughput row from the seconds of a warm-up and of the repeats (`times`, warm-up first);
    peak memory: allocated by PyTorch on CUDA since the last reset."""
    t = median(times[1:])
    return {"path": path, "variant": name, "model": f"wrn-{config.depth}-{config.width}", "batch": config.batch_size,
            "precision": precision, "layout": layout, "compile": compiled, "workers": workers, "warmup_s": times[0],
            "images_per_s": steps * config.batch_size / t, "step_ms": 1e3 * t / steps, "times_s": times[1:],
            "peak_mem_MiB": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}


def throughput_ours(trainer: Trainer, name: str, steps: int, repeats: int) -> dict:
    """Images/s of Trainer.train_epoch over `steps` full batches, median of `repeats` epochs after
    a warm-up epoch (where torch.compile compiles: warmup_s)."""
    fit_train_loader(trainer, steps)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    times = [time_call(lambda e=e: trainer.train_epoch(e), trainer.device) for e in range(1 + repeats)]
    return _row("ours", name, trainer.config, "bf16 autocast" if trainer.use_bf16 else "fp32",
                "channels_last" if trainer.train_loader.channels_last else "NCHW", 0, steps, times,
                trainer.device, trainer.model_fn is not trainer.model)


def throughput_baseline(subset, config, steps: int, repeats: int, workers: int) -> dict:
    """Images/s of the public-script loop (same WideResNet, SGD, LR as `config`): fp32 (TF32 convolutions
    by PyTorch's default on CUDA), NCHW, cudnn.benchmark, .item() of loss and accuracy every step."""
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the public scripts set it
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = WideResNet(config.depth, config.width, config.num_classes).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    batches = (b for ld in itertools.repeat(baseline_loader(subset, config.batch_size, workers, device)) for b in ld)

    def run(n: int) -> None:
        for x, y in itertools.islice(batches, n):
            out, y = model(x.to(device)), y.to(device)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item(), out.argmax(1).eq(y).sum().item()  # the host syncs of a per-step progress line

    try:
        times = [time_call(lambda n=n: run(n), device) for n in [max(2, steps // 3)] + [steps] * repeats]
    finally:
        batches.close()  # ends the DataLoader iterator and its workers
    precision = "fp32/tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"
    return _row("baseline", "baseline", config, precision, "NCHW", workers, steps, times, device)


def ratios(rows: list[dict]) -> list[dict]:
    """ours / baseline images/s for each (model, batch) measured both ways, per variant of ours."""
    return [{"model": b["model"], "batch": b["batch"], "variant": o["variant"],
             "ours_over_baseline": o["images_per_s"] / b["images_per_s"]}
            for b in rows if b["path"] == "baseline"
            for o in rows if o["path"] == "ours" and (o["model"], o["batch"]) == (b["model"], b["batch"])]


def data_path(subset, device: torch.device, batch: int, workers: int, repeats: int) -> list[dict]:
    """Epochs of DeviceLoader.train_batches (shuffle, crop, flip, normalise on the device) vs epochs of the
    baseline DataLoader from iter() (worker start-up in, shutdown out) to the last batch on the device."""
    ours = DeviceLoader(subset.train_images, subset.train_labels, device, channels_last=device.type == "cuda")
    t_ours = [time_call(lambda e=e: drain(ours.train_batches(e, batch)), device) for e in range(1 + repeats)]
    loader, alive, t_base = baseline_loader(subset, batch, workers, device), [], []

    def base_epoch() -> None:
        alive.append(it := iter(loader))  # kept: its workers shut down after the timing, and
        for x, y in itertools.islice(it, len(loader)):  # no StopIteration, which shuts them down
            x.to(device), y.to(device)

    for _ in range(repeats):
        t_base.append(time_call(base_epoch, device))
        alive.clear()
    images, ours_s, base_s = len(ours), median(t_ours[1:]), median(t_base)
    return [{"path": "ours: DeviceLoader on the device", "images": images, "epoch_s": ours_s,
             "images_per_s": images / ours_s, "ours_over_baseline": base_s / ours_s},
            {"path": f"baseline: DataLoader + PIL, {workers} workers", "images": images, "epoch_s": base_s,
             "images_per_s": images / base_s}]


def overhead(trainer: Trainer, name: str, steps: int, repeats: int) -> dict:
    """Trainer.train_epoch vs a bare loop (autocast forward, loss, zero_grad, backward, step) of its
    model, loss and optimizer over the same batches on the device, alternately: overhead = median of
    paired time ratios - 1. It includes the trainer's augmentation, also timed alone (loader share).
    warmup_s: the bare loop's first epoch, where a compiled variant compiles."""
    fit_train_loader(trainer, steps)
    c, device, loader = trainer.config, trainer.device, trainer.train_loader
    batches = [(x.clone(), y.clone()) for x, y in loader.train_batches(0, c.batch_size)]

    def bare() -> None:
        trainer.model.train()
        for x, y in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.use_bf16):
                out = trainer.model_fn(x)
            loss = trainer.loss_fn(out.float(), y)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()

    fns = {"bare": bare, "ours": lambda: trainer.train_epoch(0),
           "loader": lambda: drain(loader.train_batches(0, c.batch_size))}
    t, warmup = {name: [] for name in fns}, time_call(bare, device)
    time_call(fns["ours"], device)
    for r in range(repeats):  # alternate the order, so a drifting machine hits both alike
        for part in ("bare", "ours", "loader") if r % 2 == 0 else ("ours", "bare", "loader"):
            t[part].append(time_call(fns[part], device))
    images, bare_s, ours_s = steps * c.batch_size, median(t["bare"]), median(t["ours"])
    return {"variant": name, "model": f"wrn-{c.depth}-{c.width}", "batch": c.batch_size, "steps": steps,
            "repeats": repeats, "compile": trainer.model_fn is not trainer.model, "warmup_s": warmup,
            "bare_images_per_s": images / bare_s, "trainer_images_per_s": images / ours_s,
            "overhead_pct": 100 * (median([o / b for o, b in zip(t["ours"], t["bare"])]) - 1),
            "overhead_of_medians_pct": 100 * (ours_s / bare_s - 1),
            "loader_share_pct": 100 * median(t["loader"]) / bare_s, "times_s": t}


def real_epochs(trainer: Trainer, name: str, epochs: int) -> dict:
    """Real epochs (Trainer.train_epoch on the whole subset, evaluate on the test split) on the config's
    LR schedule until a non-finite loss; then a write of a checkpoint's content (model, optimizer, history)."""
    rows, c = [], trainer.config
    for epoch in range(epochs):
        out = {}
        train_s = time_call(lambda: out.update(train=trainer.train_epoch(epoch)), trainer.device)
        eval_s = time_call(lambda: out.update(test=trainer.evaluate(trainer.test_loader)), trainer.device)
        (train_loss, train_acc), (test_loss, test_acc) = out["train"], out["test"]
        rows.append({"variant": name, "loss": c.loss, "lr": c.lr, "epoch": epoch + 1, "train_loss": train_loss,
                     "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc, "train_s": train_s,
                     "eval_s": eval_s, "epoch_s": train_s + eval_s, "train_images": len(trainer.train_loader),
                     "compile": trainer.model_fn is not trainer.model})
        if not np.isfinite([train_loss, test_loss]).all():
            break
    path = trainer.run_dir / "bench-checkpoint.pt"
    state = {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(), "history": rows}
    write_s = median([time_call(lambda: torch.save(state, path), trainer.device) for _ in range(2)])
    return {"epochs": rows, "checkpoint": {"variant": name, "loss": c.loss, "write_s": write_s,
                                           "MiB": path.stat().st_size / 2**20}}


def family(kernel: str) -> str:
    return next((f for f, keys in FAMILIES if any(k in kernel.lower() for k in keys)), "other")


def kernel_summary(prof, wall: float, name: str) -> dict:
    """Tables of a finished torch.profiler `prof` over `wall` seconds of variant `name`: the device
    time of all kernels and the share of the wall time the GPU ran none, by family, the top 12."""
    # Kernels only: ATen ops and record_function annotations (Optimizer.step#SGD.step) also report the
    # device time of kernels counted already (results/gpu_round2-h200-2026-11-27.md, its correction).
    kernels, by_family, launches = collections.Counter(), collections.Counter(), 0
    for evt in prof.key_averages():
        if evt.device_type == torch.autograd.DeviceType.CUDA and "#" not in evt.key:
            kernels[evt.key] += (getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)) / 1e6
            launches += evt.count
    for kernel, t in kernels.items():
        by_family[family(kernel)] += t
    busy = sum(kernels.values())
    return {"profile": {"variant": name, "wall_s": wall, "kernel_s": busy, "kernels_launched": launches,
                        "gpu_idle_share": 1 - busy / wall},
            "families": [{"variant": name, "family": f, "s": t, "share_of_kernel_time": t / busy}
                         for f, t in by_family.most_common()],
            "top_kernels": [{"variant": name, "name": k[:120], "s": t, "family": family(k)}
                            for k, t in kernels.most_common(12)]}


def profile_epoch(trainer: Trainer, name: str) -> dict:
    """One steady real training epoch (its smaller last batch included) under torch.profiler, after
    2 warm-up epochs; then one more epoch unprofiled."""
    from torch.profiler import ProfilerActivity, profile
    warm = [time_call(lambda e=e: trainer.train_epoch(e), trainer.device) for e in range(2)]
    with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * (trainer.device.type == "cuda")) as p:
        wall = time_call(lambda: trainer.train_epoch(2), trainer.device)
    tables = kernel_summary(p, wall, name)
    tables["profile"].update(warm_up_epochs_s=warm, unprofiled_epoch_s=time_call(lambda: trainer.train_epoch(3),
                                                                                 trainer.device))
    return tables


def stacked(data, config, name: str, n: int, steps: int, repeats: int) -> dict:
    """Training images/s of n runs of `config` (seeds 0..n-1) as one StackedTrainer, or the run alone
    (n = 1, as the run store trains it), over `steps` full batches each; and the data path of the
    n runs' batches: one StackedLoader gather vs n loaders and a concatenation along channels."""
    trainers = [make_trainer(data, dataclasses.replace(config, seed=s), name) for s in range(n)]
    for t in trainers:
        fit_train_loader(t, steps)
    runner = trainers[0] if n == 1 else StackedTrainer(trainers)  # on a CPU, a stack runs eager
    epoch_s = median([time_call(lambda e=e: runner.train_epoch(e), runner.device) for e in range(1 + repeats)][1:])
    loaders, b = [t.train_loader for t in trainers], config.batch_size
    together = StackedLoader(loaders)
    per_run = (lambda e: ((torch.cat([x for x, _ in z], 1), torch.stack([y for _, y in z], 1))
                          for z in zip(*(loader.train_batches(e, b) for loader in loaders))))
    old, new = (median([time_call(lambda e=e: drain(batches(e)), runner.device) for e in range(1 + repeats)][1:])
                for batches in (per_run, lambda e: together.train_batches(e, b)))
    return {"stacked": {"model": f"wrn-{config.depth}-{config.width}", "variant": name, "runs": n, "batch": b,
                        "compile": runner.model_fn is not runner.model, "step_ms": 1e3 * epoch_s / steps,
                        "aggregate_images_per_s": n * b * steps / epoch_s},
            "stacked_data": {"runs": n, "batch": b, "per_run_loaders_ms": 1e3 * old / steps,
                             "stacked_loader_ms": 1e3 * new / steps, "speedup": old / new}}


def vs_alone(rows: list[dict]) -> list[dict]:
    """Each row's aggregate images/s over that of the row of one run (same model and variant)."""
    alone = {(r["model"], r["variant"]): r["aggregate_images_per_s"] for r in rows if r["runs"] == 1}
    for r in rows:
        base = alone.get((r["model"], r["variant"]))
        r["vs_alone"] = r["aggregate_images_per_s"] / base if base else None
    return rows


def processes(a, data_root: str, model: str, name: str, n: int, seconds: float, env: dict | None = None) -> dict:
    """n `worker` processes training `model` as variant `name`: each warms up and says so; then all
    train until one stop time, `seconds` after the last is ready. Their images/s and first epochs."""
    cmd = [sys.executable, __file__, "--worker", model, "--variants", name, "--device", a.device, "--preset", a.preset,
           "--data-root", data_root, "--steps", str(a.steps), "--batch", str(a.batches[0])]
    start, procs = time.perf_counter(), [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                                           env=env) for _ in range(n)]
    try:
        ready = [p.stdout.readline() == "ready\n" for p in procs]
        stop = time.time() + seconds
        outs = [p.communicate(f"{stop}\n" if ok else "", timeout=seconds + 600)[0] for p, ok in zip(procs, ready)]
    finally:
        for p in procs:
            p.kill()
    outs = [json.loads(o.splitlines()[-1]) for p, o in zip(procs, outs) if p.returncode == 0 and o.strip()]
    return {"model": model, "variant": name, "runs": n, "finished": len(outs), "seconds": seconds,
            "wall_s": time.perf_counter() - start, "aggregate_images_per_s": sum(o["images_per_s"] or 0 for o in outs),
            "first_epoch_s": max((o["first_epoch_s"] for o in outs), default=None),
            "per_process_images_per_s": [o["images_per_s"] for o in outs]}


def worker(a) -> int:
    """A process of the concurrency and compile parts: the first epoch of `steps` full batches
    (compiling if the variant does), 'ready', then epochs until the stop time read from stdin."""
    config = run_config(a.preset, "ce", a.worker, device=a.device, batch_size=a.batches[0])
    trainer = make_trainer(load_cifar100(a.data_root, verify=False, download=False), config, a.variants)
    fit_train_loader(trainer, a.steps)
    first = time_call(lambda: trainer.train_epoch(0), trainer.device)
    print("ready", flush=True)
    stop, epochs, start = float(sys.stdin.readline()), 0, time.perf_counter()
    while time.time() < stop:
        epochs += 1
        trainer.train_epoch(epochs)
    seconds = time_call(lambda: None, trainer.device) + time.perf_counter() - start  # after a synchronisation
    print(json.dumps({"first_epoch_s": first, "images_per_s": epochs * a.steps * config.batch_size / seconds or None}))
    return 0


def sweep(a, data, data_root: str, archive: Path) -> dict:
    """Fig 1's runs at `a.sweep_preset` (CE, QL, CCQL x seeds, one class draw) through the run store
    as run_all.sh trains them: CE seed 0 alone, then all stacked (the default on a GPU, asked for on
    a CPU). Wall time, median epoch (train + test pass, from epoch 2; a stack's runs share it),
    images/s over all runs; each run's final state; the stacked runs' records to `archive`."""
    configs = {f"{label} seed {s}": c for s in range(a.seeds) for label, c in experiment_configs(
        "k25_random", a.sweep_preset, s, class_seed=0, device=a.device).items()}
    subset, rows, finals = subset_of(data, configs["CE seed 0"]), [], []
    with tempfile.TemporaryDirectory() as runs_dir:
        for name, todo, most in (("alone", {"CE seed 0": configs["CE seed 0"]}, 1),
                                 ("stacked", configs, None if a.device == "cuda" else len(configs))):
            ctx = RunContext.of(runs_dir=Path(runs_dir) / name, data_root=data_root, progress=False,
                                verify_data=not a.dry_run, runs_per_gpu=most)
            start = time.perf_counter()
            runs = obtain(ctx, todo, f"bench sweep {name}")
            epoch = float(next(iter(runs.values())).history.seconds.iloc[1:].median())
            rows.append({"part": name, "runs": len(runs), "wall_s": time.perf_counter() - start, "epoch_s": epoch,
                         "images_per_s": len(runs) * (len(subset.train_labels) + len(subset.test_labels)) / epoch})
            finals += [{"part": name, "run": label, "state": r.state, "test_acc": r.final().get("test_acc"),
                        "stacked_runs": r.status.get("stacked_runs", 1)} for label, r in runs.items()]
        export_records([r.run_dir for r in runs.values()], archive)  # for `python -m ccql_utils import`
    rows[1]["speedup_vs_alone"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return {"sweep": rows, "sweep_runs": finals}


def estimates(tables: dict, runs: dict) -> list[dict]:
    """Figures derived from the tables (the epochs of the first variant). runs: {label: (epochs,
    images per epoch relative to the measured subset, checkpoint_every)} of whole runs to extrapolate to."""
    rows = tables.get("epochs") or []
    rows = [r for r in rows if r.get("variant") == rows[0].get("variant")]
    steady = [r for r in rows if r["epoch"] > 1]
    if not steady:
        return []
    epoch_s = median([r["train_s"] + r["eval_s"] for r in steady])
    train_s, images = median([r["train_s"] for r in steady]), steady[0]["train_images"]
    one_time = max(0.0, rows[0]["train_s"] + rows[0]["eval_s"] - epoch_s)
    compiled = [r for r in tables.get("throughput", []) if r["path"] == "ours" and r["compile"]]
    graph = max(0.0, compiled[0]["warmup_s"] - median(compiled[0]["times_s"])) if compiled else 0.0
    ckpt = median([r["write_s"] for r in tables.get("checkpoint", [])])
    out = [("steady epoch, train + eval", epoch_s, "s"), ("steady training rate", images / train_s, "images/s"),
           ("first epoch's extra time (if compiled: the last-batch and eval graphs)", one_time, "s"),
           ("compiling the full-batch training graph (throughput warm-up minus a repeat)", graph, "s")]
    for label, (epochs, scale, every) in runs.items():
        minutes = (epochs * scale * epoch_s + one_time + graph) / 60
        out += [(f"{label}, {epochs} epochs, extrapolated", minutes, "min"),
                (f"{label}, the same with a checkpoint every {every} epochs",
                 minutes + epochs // every * scale * ckpt / 60, "min")]
        if compiled:
            out.append((f"{label}, training only, at the compiled throughput rate",
                        epochs * scale * images / compiled[0]["images_per_s"] / 60, "min"))
    data = next((r for r in tables.get("data", []) if r["path"].startswith("ours")), None)
    if data:
        out.append(("data path share of a training epoch", 100 * data["epoch_s"] / data["images"] * images / train_s,
                    "%"))
    return [{"quantity": q, "value": v, "unit": u} for q, v, u in out]


def run(a, data, data_root: str, out: Path, stem: str) -> Record:
    """Every part asked for, in the order of PARTS."""
    device, cuda = torch.device(a.device), a.device == "cuda"
    peak = next((v for k, v in PEAK_FLOPS.items() if k in describe_device(device)), None)
    meta = {"device": describe_device(device), "arguments": vars(a), "data": data.folder,
            "environment": environment_record() | ({"commit": a.commit} if a.commit else {}),
            "MFU_peak_TFLOP_s": peak and peak / 1e12, "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    rec = Record(out, stem, meta, a.budget_s, set(a.parts.split(",")))
    t, part = rec.data["tables"], rec.part
    models, variants, small = a.models.split(","), a.variants.split(","), a.stack_models.split(",")
    cfg = functools.partial(run_config, a.preset, "ce", device=a.device, batch_size=a.batches[0])  # (model, ...)
    real = functools.partial(run_config, a.preset, device=a.device)  # (loss): the preset's own run
    subset, rates = subset_of(data, cfg()), lambda row, at="": with_rates(row, t.get("flops", []), peak, at)

    def ours(model, v, b):
        return {"throughput": rates(throughput_ours(make_trainer(data, cfg(model, batch_size=b), v), v, a.steps,
                                                    a.repeats))}

    def need(v, seconds=20.0):  # rough seconds on a GPU: the part, and ~90 more for a compile
        return seconds + 90 * bool(variant(v)["compile"])

    def compile_cost():  # one inductor cache folder: cold, then warm
        with tempfile.TemporaryDirectory() as cache:
            return {"compile": [{"cache": label, **processes(a, data_root, models[0], "compile", 1, 0, {
                **os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})} for label in ("cold", "warm")]}

    part("device", lambda: {"device": device_info(device, 8192 if cuda else 512)})
    part("flops", lambda: {"flops": flops_per_image(dict.fromkeys(["wrn-28-10", *models, *small]))})
    for m, b in itertools.product(models, a.batches):
        for v in variants:
            part(f"throughput ours {m} b{b} {v}", lambda m=m, b=b, v=v: ours(m, v, b), need_s=need(v))
        part(f"throughput baseline {m} b{b}", lambda m=m, b=b: {"throughput": rates(throughput_baseline(
            subset, cfg(m, batch_size=b), a.steps, a.repeats, a.workers))})
    part("data", lambda: {"data": data_path(subset, device, cfg().batch_size, a.workers, a.repeats)})
    for v in variants:
        part(f"overhead {v}", lambda v=v: {"overhead": rates(overhead(make_trainer(data, cfg(models[0]), v), v,
                                                                      a.steps, a.repeats), "bare_")}, need_s=need(v))
    losses = [c.loss for c in experiment_configs("k25_random", a.preset).values()]
    for v, loss in [(variants[0], loss) for loss in losses] + [(v, "ce") for v in variants[1:]]:
        part(f"epochs {loss} {v}", lambda v=v, loss=loss: real_epochs(make_trainer(data, real(loss), v), v, a.epochs),
             need_s=need(v, 5 * a.epochs))
    for v in variants:
        part(f"profile {v}", lambda v=v: profile_epoch(make_trainer(data, real("ce"), v), v), need_s=need(v, 30))
    for m, v, n in itertools.product(small, variants, map(int, a.stack.split(","))):
        part(f"stacked {m} x{n} {v}", lambda m=m, v=v, n=n: stacked(data, cfg(m), v, n, a.steps, a.repeats),
             need_s=need(v))
    for m, n in itertools.product(small, map(int, a.processes.split(","))):
        part(f"concurrency {m} x{n}", lambda m=m, n=n: {"concurrency": processes(
            a, data_root, m, variants[0], n, a.seconds)}, need_s=a.seconds + 30 * n ** 0.5)
    part("compile", compile_cost, need_s=120)
    part("sweep", lambda: sweep(a, data, data_root, out / f"{stem}_records.tar.gz"), need_s=150)
    vs_alone(t.get("stacked", [])), vs_alone(t.get("concurrency", []))
    t["ratios"] = ratios(t.get("throughput", []))
    ce, k100 = real("ce"), next(iter(experiment_configs("k100", a.preset).values()))
    scale = 100 * (k100.train_per_class or 500) / (25 * (ce.train_per_class or 500))  # images per epoch
    t["estimates"] = estimates(t, {"K = 25": (ce.epochs, 1, ce.checkpoint_every),
                                   "K = 100": (k100.epochs, scale, k100.checkpoint_every)})
    rec.write()
    return rec


def parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog=doc[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--dry-run", action="store_true", help="every part at toy size on a CPU (sizes: DRY_RUN)")
    add("--device", choices=("cpu", "cuda"), help="default: cuda where available")
    add("--preset", help="the ccql_utils preset of the runs' model, data size and LRs (default: the device's)")
    add("--data-root", help="CIFAR-100, or a `python -m ccql_utils pack` subset (default: as ccql_utils finds it)")
    add("--parts", default="device,flops,throughput,data,overhead,epochs", help=f"of {','.join(PARTS)}")
    add("--models", help="throughput models, the first also of overhead and compile (default: the preset's, "
                         "wrn-16-2, wrn-10-1)")
    add("--batch", help="throughput: batch sizes; the first also of the others (default: the preset's)")
    add("--steps", type=int, default=20, help="full batches per timed epoch")
    add("--repeats", type=int, default=3, help="timed epochs after the warm-up")
    add("--variants", help="how the trainer runs (words listed below; default eager,compile on CUDA, else eager)")
    add("--epochs", type=int, default=3, help="epochs: real epochs per loss and variant")
    add("--workers", type=int, default=min(8, os.cpu_count() or 1), help="baseline DataLoader workers")
    add("--stack", default="1,32,64", help="stacked: runs per stack")
    add("--stack-models", default="wrn-10-1,wrn-16-2", help="stacked, concurrency: models")
    add("--processes", default="1,4,8,16", help="concurrency: processes at once")
    add("--seconds", type=float, default=5.0, help="concurrency: seconds the processes train together")
    add("--sweep-preset", default="quick", help="sweep: the preset of Fig 1's runs")
    add("--seeds", type=int, default=10, help="sweep: seeds of each loss")
    add("--budget-s", type=float, default=float("inf"), help="skip a part whose rough need exceeds the time left")
    add("--out", help="record folder (default $OUT, else benchmarks/results)")
    add("--stem", help="record file name (default bench-<preset>-<device>-<date>)")
    add("--commit", help="the commit the tree came from (for a copy without .git)")
    add("--worker", help=argparse.SUPPRESS)  # a process of the concurrency and compile parts: its model
    return p


def main(argv=None) -> int:
    p = parser()
    if p.parse_known_args(argv)[0].dry_run:  # its sizes are the defaults (abbreviated options too)
        p.set_defaults(**DRY_RUN)
    a = p.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench: --device cuda needs a CUDA GPU; on a CPU use --device cpu or --dry-run", file=sys.stderr)
        return 2
    a.preset = resolve_preset(a.preset or "auto", a.device)
    a.variants = a.variants or ("eager,compile" if a.device == "cuda" else "eager")
    c = run_config(a.preset)
    a.batches = [int(b) for b in (a.batch or str(c.batch_size)).split(",")]
    a.models = a.models or ",".join(dict.fromkeys([f"wrn-{c.depth}-{c.width}", "wrn-16-2", "wrn-10-1"]))
    if a.worker:
        return worker(a)
    out = Path(a.out or os.environ.get("OUT") or (tempfile.mkdtemp(prefix="bench-") if a.dry_run else HERE / "results"))
    slug = f"cpu{os.cpu_count()}" if a.device == "cpu" else \
        next((k.lower() for k in PEAK_FLOPS if k in torch.cuda.get_device_name()), "cuda")
    stem = a.stem or f"bench-{a.preset}-{slug}-{time.strftime('%Y-%m-%d', time.gmtime())}"
    with tempfile.TemporaryDirectory() as tmp:
        if a.dry_run and not a.data_root:  # a generated stand-in with CIFAR-100's class names
            write_synthetic_cifar100(tmp, train_per_class=8, test_per_class=4, seed=0)
            a.data_root = tmp
        data = load_cifar100(a.data_root, verify=not a.dry_run, download=False)
        rec = run(a, data, str(data_source(a.data_root).resolve()), out, stem)
    print(markdown(rec.data))
    print(f"wrote {out / stem}.json and .md", file=sys.stderr)
    return 1 if rec.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
