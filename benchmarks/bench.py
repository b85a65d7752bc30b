#!/usr/bin/env python3
"""Training-speed benchmarks of ccql_utils: every part a function, a preset picks the sizes.

Parts (tables of the record, units in the column names): device, flops (per training image),
throughput (images/s, MFU: ours, eager and compiled, vs a baseline as public WideResNet scripts
train), data (the data path alone), overhead (the trainer vs a bare loop), epochs (real epochs of
CE, QL, CCQL at a ccql_utils preset's LRs), checkpoint, scaling, and derived ratios and estimates.
The part runner (`Record.part`, in record.py) records a failure and goes on, skips a part that would not fit
the time budget left, and rewrites the record after every part, so a run cut off keeps what it
measured. Timing: CUDA events on a GPU, perf_counter on a CPU; medians of repeats after a warm-up.

    python benchmarks/bench.py --preset dry-run    # every part at toy size on a CPU, ~20 s
    python benchmarks/bench.py --preset cpu --data-root ../shared/data
    PYTHONPATH=. python3 benchmarks/bench.py --preset gpu --data-root .carry/k25.npz  # not installed
Targets and recorded figures: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import ast
import atexit
import collections
import dataclasses
import functools
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ccql_utils.loader import DeviceLoader
from ccql_utils.data import (CIFAR100_MEAN, CIFAR100_STD, load_cifar100, make_subset,
                             select_classes, write_synthetic_cifar100)
from ccql_utils.presets import experiment_configs
from ccql_utils.provenance import describe_device, environment_record
from ccql_utils.train import Trainer
from ccql_utils.wrn import WideResNet, count_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
from record import Record, markdown  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# MFU denominator: an 8192^3 bf16 matmul through PyTorch runs at 769-798 TFLOP/s on the H100s and
# H200s measured (786 in results/gpu_check-h200-2026-11-27.md), not the datasheet's 989.
PEAK_FLOPS = {"H100": 790e12, "H200": 790e12}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Sizes of one run. Model rows: (model, batch, steps per repeat, repeats); the first is the
    main model. compile_s / epoch_s: rough seconds of one compile / real epoch, for the budget."""

    device: str
    protocol: str                  # the ccql_utils preset whose LRs, schedule, model the epochs use
    models: tuple
    overhead: tuple                # (model, batch, steps, repeats)
    scaling: tuple                 # (model, batches, steps, repeats)
    compile: bool = False          # also compiled: main model row, overhead, epochs, scaling
    workers: int = 2               # baseline DataLoader workers
    epochs: int = 2                # real epochs per loss
    threads: int | None = None     # torch.set_num_threads (None: PyTorch's default)
    budget_s: float = 600
    compile_s: float = 0
    epoch_s: float = 20


PRESETS = {
    # 2-core CPU, ~3-5 min: WRN-28-10 (~13 images/s here) only at batch 16, 2 steps per repeat.
    "cpu": Preset("cpu", "quick", (("wrn-10-1", 128, 8, 3), ("wrn-16-2", 128, 4, 3), ("wrn-28-10", 16, 2, 3)),
                  overhead=("wrn-10-1", 128, 10, 7), scaling=("wrn-10-1", (128, 256, 512), 3, 3)),
    # One H100/H200 in about 7 minutes: the WRN-28-10 rows first, the small models last.
    "gpu": Preset("cuda", "paper", (("wrn-28-10", 128, 30, 3), ("wrn-16-2", 128, 30, 3),
                                    ("wrn-10-1", 128, 30, 3)),
                  overhead=("wrn-28-10", 128, 20, 3), scaling=("wrn-28-10", (256, 512), 15, 3), compile=True,
                  workers=8, epochs=3, budget_s=420, compile_s=150, epoch_s=5),
    # Every part at toy size on a CPU, compiled rows included (see make_trainer).
    "dry-run": Preset("cpu", "tiny", (("wrn-10-1", 16, 2, 2),), overhead=("wrn-10-1", 16, 2, 2),
                      scaling=("wrn-10-1", (32,), 1, 1), compile=True, workers=1, threads=1, budget_s=120,
                      compile_s=5, epoch_s=2),
}


def time_call(fn, device: torch.device) -> float:
    """Seconds of fn(): CUDA events after a synchronisation on a GPU, perf_counter on a CPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    torch.cuda.synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def run_config(protocol: str, loss: str = "ce", model: str | None = None, **overrides):
    """The K = 25 random-class run of `loss` at ccql_utils preset `protocol` (its LR, schedule,
    data size), with `model` ('wrn-<depth>-<width>') and overrides (None: the preset's) on top."""
    if model:
        overrides["depth"], overrides["width"] = map(int, model.split("-")[1:])
    return next(c for c in experiment_configs("k25_random", protocol, **overrides).values() if c.loss == loss)


def make_trainer(data, config) -> Trainer:
    """A Trainer in a throw-away folder. Compiled on a CPU (the dry run), its forward uses dynamo's
    'eager' backend: graph capture, guards and recompilation, without inductor's minutes of C++."""
    swap = config.compile and torch.device(config.device).type == "cpu"
    run_dir = tempfile.mkdtemp(prefix="ccql-bench-")
    atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    trainer = Trainer(dataclasses.replace(config, compile=config.compile and not swap), data, run_dir,
                      progress=False)
    if swap:
        trainer.model_fn = torch.compile(trainer.model, backend="eager")
    return trainer


def fit_train_loader(trainer: Trainer, steps: int) -> None:
    """An epoch of exactly `steps` full batches (the subset cycled): no smaller last batch, whose
    new shape would recompile inside a timed epoch."""
    src = trainer.train_loader
    index = torch.arange(steps * trainer.config.batch_size, device=src.labels.device) % len(src)
    trainer.train_loader = DeviceLoader(src.images[index].cpu().numpy(), src.labels[index].cpu().numpy(),
                                        src.device, seed=src.seed, channels_last=src.channels_last)


class ArrayCifar(torch.utils.data.Dataset):
    """uint8 [N, 3, 32, 32] images served as torchvision's CIFAR100 serves its own: an HWC array
    -> PIL.Image.fromarray -> transform, and an int label."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels = images.transpose(0, 2, 3, 1).copy(), labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def baseline_loader(subset, batch: int, workers: int, device: torch.device):
    """DataLoader (shuffle, pin_memory on CUDA) of RandomCrop(32, 4), flip, ToTensor, Normalize."""
    import torchvision.transforms as T
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    return torch.utils.data.DataLoader(ArrayCifar(subset.train_images, subset.train_labels, transform),
                                       batch_size=batch, shuffle=True, num_workers=workers,
                                       pin_memory=device.type == "cuda")


def device_info(device: torch.device, n: int, reps: int = 10) -> dict:
    """Name, memory, versions, and the rate of an n^3 matmul of random data (TFLOP/s)."""
    info = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
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


def with_rates(row: dict, flops_rows: list[dict], peak: float | None) -> dict:
    """The row with TFLOP/s, and MFU (% of `peak` FLOP/s; None without a peak), from its images/s."""
    gflop = next((r["train_GFLOP"] for r in flops_rows if r["model"] == row["model"]), None)
    if gflop:
        row["TFLOP_s"] = row["images_per_s"] * gflop / 1e3
        row["MFU_pct"] = 1e14 * row["TFLOP_s"] / peak if peak else None
    return row


def _row(path, config, precision, layout, compile, workers, steps, times, device) -> dict:
    """A throughput row from the seconds of a warm-up and of the repeats (`times`, warm-up first);
    peak memory: allocated by PyTorch on CUDA since the last reset."""
    t, cuda = median(times[1:]), device.type == "cuda"
    return {"path": path, "model": f"wrn-{config.depth}-{config.width}", "batch": config.batch_size,
            "precision": precision, "layout": layout, "compile": compile, "workers": workers,
            "images_per_s": steps * config.batch_size / t, "step_ms": 1e3 * t / steps,
            "warmup_s": times[0], "times_s": times[1:],
            "peak_mem_MiB": torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None}


def throughput_ours(trainer: Trainer, steps: int, repeats: int) -> dict:
    """Images/s of Trainer.train_epoch over `steps` full batches, median of `repeats` epochs after
    a warm-up epoch (where torch.compile compiles: warmup_s)."""
    fit_train_loader(trainer, steps)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    times = [time_call(lambda e=e: trainer.train_epoch(e), trainer.device) for e in range(1 + repeats)]
    return _row("ours", trainer.config, "bf16 autocast" if trainer.use_bf16 else "fp32",
                "channels_last" if trainer.train_loader.channels_last else "NCHW",
                trainer.model_fn is not trainer.model, 0, steps, times, trainer.device)


def throughput_baseline(subset, config, steps: int, repeats: int, workers: int) -> dict:
    """Images/s of the public-script loop (same WideResNet, SGD, LR as `config`): fp32 (TF32 convolutions
    by PyTorch's default on CUDA), NCHW, cudnn.benchmark, .item() of loss and accuracy every step."""
    device = torch.device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the public scripts set it
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = WideResNet(config.depth, config.width, config.num_classes).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay)
    loader = baseline_loader(subset, config.batch_size, workers, device)
    batches = (b for _ in itertools.count() for b in loader)

    def run(n: int) -> None:
        for x, y in itertools.islice(batches, n):
            x, y = x.to(device), y.to(device)
            out = model(x)
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
    return _row("baseline", config, precision, "NCHW", False, workers, steps, times, device)


def ratios(rows: list[dict]) -> list[dict]:
    """ours / baseline images/s for each (model, batch) measured both ways."""
    return [{"model": b["model"], "batch": b["batch"], "compile": o["compile"],
             "ours_over_baseline": o["images_per_s"] / b["images_per_s"]}
            for b in rows if b["path"] == "baseline"
            for o in rows if o["path"] == "ours" and (o["model"], o["batch"]) == (b["model"], b["batch"])]


def data_path(subset, device: torch.device, batch: int, workers: int, repeats: int) -> list[dict]:
    """Epochs of DeviceLoader.train_batches (shuffle, crop, flip, normalise on the device) vs epochs of the
    baseline DataLoader from iter() (worker start-up in, shutdown out) to the last batch on the device."""
    ours = DeviceLoader(subset.train_images, subset.train_labels, device, channels_last=device.type == "cuda")
    drain = collections.deque(maxlen=0).extend  # consumes an iterator, keeping nothing
    t_ours = [time_call(lambda e=e: drain(ours.train_batches(e, batch)), device) for e in range(1 + repeats)]
    loader = baseline_loader(subset, batch, workers, device)
    alive, t_base = [], []

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


def overhead(trainer: Trainer, steps: int, repeats: int) -> dict:
    """Trainer.train_epoch vs a bare loop (autocast forward, loss, zero_grad, backward, step) of its
    model, loss and optimizer over the same batches on the device, alternately: overhead = median of
    paired time ratios - 1. It includes the trainer's augmentation, also timed alone (loader share)."""
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
           "loader": lambda: collections.deque(loader.train_batches(0, c.batch_size), maxlen=0)}
    t = {name: [] for name in fns}
    time_call(bare, device), time_call(fns["ours"], device)  # warm-up (and compilation)
    for r in range(repeats):  # alternate the order, so a drifting machine hits both alike
        for name in ("bare", "ours", "loader") if r % 2 == 0 else ("ours", "bare", "loader"):
            t[name].append(time_call(fns[name], device))
    images, bare_s, ours_s = steps * c.batch_size, median(t["bare"]), median(t["ours"])
    return {"model": f"wrn-{c.depth}-{c.width}", "batch": c.batch_size, "steps": steps, "repeats": repeats,
            "compile": trainer.model_fn is not trainer.model, "bare_images_per_s": images / bare_s,
            "trainer_images_per_s": images / ours_s,
            "overhead_pct": 100 * (median([o / b for o, b in zip(t["ours"], t["bare"])]) - 1),
            "overhead_of_medians_pct": 100 * (ours_s / bare_s - 1),
            "loader_share_pct": 100 * median(t["loader"]) / bare_s, "times_s": t}


def real_epochs(data, config, epochs: int, trainer: Trainer | None = None) -> dict:
    """Real epochs (Trainer.train_epoch on the whole subset, evaluate on the test split) on the config's LR
    schedule until a non-finite loss; then a write of a checkpoint's content (model, optimizer, history).
    trainer: one made by make_trainer(data, config) and then changed (default: a new one)."""
    trainer, rows = trainer or make_trainer(data, config), []
    for epoch in range(epochs):
        out = {}
        train_s = time_call(lambda: out.update(train=trainer.train_epoch(epoch)), trainer.device)
        eval_s = time_call(lambda: out.update(test=trainer.evaluate(trainer.test_loader)), trainer.device)
        (train_loss, train_acc), (test_loss, test_acc) = out["train"], out["test"]
        rows.append({"loss": config.loss, "lr": config.lr, "epoch": epoch + 1, "train_loss": train_loss,
                     "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc, "train_s": train_s,
                     "eval_s": eval_s, "train_images": len(trainer.train_loader),
                     "compile": trainer.model_fn is not trainer.model})
        if not np.isfinite([train_loss, test_loss]).all():
            break
    path = trainer.run_dir / "bench-checkpoint.pt"
    state = {"model": trainer.model.state_dict(), "optimizer": trainer.optimizer.state_dict(), "history": rows}
    write_s = median([time_call(lambda: torch.save(state, path), trainer.device) for _ in range(2)])
    return {"epochs": rows, "checkpoint": {"loss": config.loss, "write_s": write_s,
                                           "MiB": path.stat().st_size / 2**20}}


def estimates(tables: dict, runs: dict) -> list[dict]:
    """Figures derived from the tables. runs: {label: (epochs, images per epoch relative to the
    measured subset, checkpoint_every)} of the whole runs to extrapolate to."""
    rows = tables.get("epochs") or []
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
        out.append(("data path share of a training epoch",
                    100 * data["epoch_s"] / data["images"] / (train_s / images), "%"))
    return [{"quantity": q, "value": v, "unit": u} for q, v, u in out]


def run(preset: Preset, data, out_dir: Path, stem: str, parts: set, commit: str | None = None) -> Record:
    """Every part of `preset`: the main model's rows first, then what the budget allows."""
    device = torch.device(preset.device)
    if preset.threads:
        torch.set_num_threads(preset.threads)
    name = describe_device(device)
    peak = next((v for k, v in PEAK_FLOPS.items() if k in name), None)
    meta = {"device": name, "preset": dataclasses.asdict(preset), "data": data.folder,
            "environment": environment_record() | ({"commit": commit} if commit else {}),
            "MFU_peak_TFLOP_s": peak and peak / 1e12, "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    rec = Record(out_dir, stem, meta, preset.budget_s, parts)
    tables = rec.data["tables"]

    cfg = functools.partial(run_config, preset.protocol, "ce", device=str(device))  # (model, batch_size=...)

    def ours(model, batch, steps, repeats, compile=False, table="throughput"):
        trainer = make_trainer(data, cfg(model, batch_size=batch, compile=compile))
        return {table: with_rates(throughput_ours(trainer, steps, repeats), tables.get("flops", []), peak)}

    def both(model, batch, steps, repeats):
        rec.part(f"throughput ours {model} b{batch}", lambda: ours(model, batch, steps, repeats))
        rec.part(f"throughput baseline {model} b{batch}", lambda: {"throughput": with_rates(throughput_baseline(
            subset, cfg(model, batch_size=batch), steps, repeats, preset.workers), tables.get("flops", []), peak)})

    ce, (main, *small) = cfg(), preset.models
    subset = make_subset(data, select_classes(ce.classes, data, ce.num_classes, ce.class_seed))
    rec.part("device", lambda: {"device": device_info(device, 8192 if device.type == "cuda" else 512)})
    models = dict.fromkeys(["wrn-28-10"] + [m[0] for m in preset.models])
    rec.part("flops", lambda: {"flops": flops_per_image(models)})
    both(*main)
    if preset.compile:
        rec.part(f"throughput ours {main[0]} b{main[1]} compiled", lambda: ours(*main, compile=True),
                 need_s=preset.compile_s + 3 * preset.epoch_s)
    rec.part("data", lambda: {"data": data_path(subset, device, 128, preset.workers, 3)})
    m, b, s, r = preset.overhead
    rec.part("overhead", lambda: {"overhead": overhead(make_trainer(
        data, cfg(m, batch_size=b, compile=preset.compile)), s, r)}, need_s=4 * preset.epoch_s)
    # The first run's epochs also compile two graphs: the epoch's smaller last batch, and evaluation.
    runs = experiment_configs("k25_random", preset.protocol, device=str(device), compile=preset.compile)
    for i, c in enumerate(runs.values()):
        rec.part(f"epochs {c.loss}", lambda c=c: real_epochs(data, c, preset.epochs),
                 need_s=2.5 * preset.compile_s * (i == 0) + preset.epochs * preset.epoch_s)
    for spec in small:
        both(*spec)
    m, batches, s, r = preset.scaling
    for b, c in itertools.product(batches, (False, True) if preset.compile else (False,)):
        rec.part(f"scaling {m} b{b}{' compiled' * c}", lambda b=b, c=c: ours(m, b, s, r, c, table="scaling"),
                 need_s=20 + preset.compile_s * c)
    tables["ratios"] = ratios(tables.get("throughput", []))
    k100 = next(iter(experiment_configs("k100", preset.protocol).values()))
    scale = 100 * (k100.train_per_class or 500) / (25 * (ce.train_per_class or 500))  # images per epoch
    tables["estimates"] = estimates(tables, {"K = 25": (ce.epochs, 1, ce.checkpoint_every),
                                             "K = 100": (k100.epochs, scale, k100.checkpoint_every)})
    rec.write()
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--data-root", help="CIFAR-100 folder, or a subset packed by `python -m ccql_utils "
                                       "pack` (.npz); default CCQL_DATA_ROOT, then ./data; dry-run: synthetic")
    p.add_argument("--parts", default="device,flops,throughput,data,overhead,epochs,scaling")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="override Preset fields, e.g. budget_s=120 threads=1 epochs=1 workers=4")
    p.add_argument("--out", help="record folder (default $OUT, else benchmarks/results; dry-run: a temp one)")
    p.add_argument("--stem", help="record file name (default bench-<preset>-<device>-<date>)")
    p.add_argument("--commit", help="the commit the tree came from (for a copy without .git)")
    a = p.parse_args(argv)
    fields = dict(kv.split("=", 1) for kv in a.set)
    preset = dataclasses.replace(PRESETS[a.preset], **{k: ast.literal_eval(v) for k, v in fields.items()})
    if preset.device == "cuda" and not torch.cuda.is_available():
        print("bench: the gpu preset needs a CUDA GPU; on a CPU use --preset cpu or dry-run", file=sys.stderr)
        return 2
    dry = a.preset == "dry-run"
    out = Path(a.out or os.environ.get("OUT") or (tempfile.mkdtemp(prefix="bench-") if dry else RESULTS_DIR))
    slug = (next((k.lower() for k in ("H200", "H100", "A100") if k in torch.cuda.get_device_name()), "cuda")
            if preset.device == "cuda" else f"cpu{os.cpu_count()}")
    stem = a.stem or f"bench-{a.preset}-{slug}-{time.strftime('%Y-%m-%d', time.gmtime())}"
    with tempfile.TemporaryDirectory() as tmp:
        if dry and not a.data_root:  # a generated stand-in with CIFAR-100's class names
            write_synthetic_cifar100(tmp, train_per_class=8, test_per_class=4, seed=0)
            data = load_cifar100(tmp, verify=False, download=False)
        else:
            data = load_cifar100(a.data_root, download=False)
    rec = run(preset, data, out, stem, set(a.parts.split(",")), a.commit)
    print(markdown(rec.data))
    print(f"wrote {out / stem}.json and .md", file=sys.stderr)
    return 1 if rec.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
