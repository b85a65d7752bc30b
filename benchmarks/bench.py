#!/usr/bin/env python3
"""Training-speed benchmarks of `ccql_utils` on whatever device this runs on.

Parts (each writes into one record, JSON + markdown, under benchmarks/results/ or $OUT):

1. flops       model FLOPs per training image (forward + backward) from torch.utils.flop_counter
2. throughput  training images/s, steady state after warm-up, median of repeats, for the
               package's path (Trainer.train_epoch: on-device batch augmentation, bf16 +
               channels-last on CUDA, optionally torch.compile) and for a standard baseline
               written the way public WideResNet scripts train (fp32 with PyTorch's default
               TF32 on CUDA, NCHW, torchvision CIFAR100 + DataLoader + PIL transforms,
               `.item()` every step); our/baseline ratio; MFU against a stated peak (CUDA)
3. data        the data path alone: DeviceLoader's augmented batches vs DataLoader + PIL
4. overhead    Trainer.train_epoch vs a bare loop (same model, loss, optimizer, the same
               augmented batches already on the device)
5. scaling     throughput and peak memory at batch 128, 256, 512

Timing: the device is synchronised before and after each timed call (time.perf_counter).

    python benchmarks/bench.py --preset cpu --data-root ../shared/data      # ~3-5 min on 2 cores
    python benchmarks/bench.py --preset smoke                               # seconds, synthetic data
    python benchmarks/bench.py --preset gpu --npz .carry/cifar100_k25_seed0.npz

The GPU flow that also trains real epochs of each loss is benchmarks/gpu_check.py.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO_ROOT)):  # the GPU machine has the repo, not the package
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ccql_utils.data import (CIFAR100_MEAN, CIFAR100_STD, Cifar100, DeviceLoader,  # noqa: E402
                             load_cifar100, make_subset, select_classes, write_synthetic_cifar100)
from ccql_utils.provenance import atomic_write_text, environment_record  # noqa: E402
from ccql_utils.train import Trainer, TrainConfig  # noqa: E402
from ccql_utils.wrn import WideResNet, count_parameters  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
K = 25            # the benchmark's subset: 25 random classes, class seed 0 (as the paper's Fig 1)
CLASS_SEED = 0

# The MFU denominator: dense bf16 matrix rate measured on this workplace's H100/H200 (an
# 8192^3 bf16 matmul through PyTorch ran at 769-798 TFLOP/s; REPRODUCTION.md "Compute facts"
# uses 790). The datasheet's 989 TFLOP/s (SXM, dense) is not reached by any matmul here.
PEAK_BF16_FLOPS = 790e12
PEAK_SOURCE = ("790 TFLOP/s: the dense bf16 matmul rate measured on this workplace's H100/H200 "
               "(REPRODUCTION.md, 'Compute facts'); MFU of fp32/TF32 rows uses the same peak")

MODELS = {"wrn-28-10": (28, 10), "wrn-16-2": (16, 2), "wrn-10-1": (10, 1)}


# ----------------------------------------------------------------------------- presets
@dataclass
class Preset:
    """What to measure. Model entries: (model, batch, steps per repeat, repeats)."""

    models: list = field(default_factory=list)
    compile_models: tuple = ()            # models also measured with torch.compile (CUDA)
    baseline: bool = True
    workers: int = 2                      # DataLoader workers of the baseline
    data_batches: int | None = None       # baseline DataLoader batches per repeat (None: an epoch)
    data_repeats: int = 3
    overhead: tuple | None = ("wrn-10-1", 128, 8, 5)   # model, batch, steps, repeats
    scaling: tuple | None = ("wrn-10-1", (128, 256, 512), 2, 2)  # model, batches, steps, repeats
    flops_models: tuple = tuple(MODELS)
    train_per_class: int | None = None    # cap on the subset's training images (None: 500)
    threads: int | None = None            # torch.set_num_threads (None: PyTorch's default)


PRESETS = {
    # 2-core CPU, ~3-5 minutes: WRN-28-10 (~5 images/s here) only at batch 16 with one step
    # per repeat; the small preset models at batch 128.
    "cpu": Preset(models=[("wrn-10-1", 128, 8, 3), ("wrn-16-2", 128, 4, 3), ("wrn-28-10", 16, 2, 3)],
                  workers=2, data_repeats=3,
                  overhead=("wrn-10-1", 128, 10, 7), scaling=("wrn-10-1", (128, 256, 512), 3, 3)),
    # One H100/H200: WRN-28-10 eager and compiled, the small models eager.
    "gpu": Preset(models=[("wrn-28-10", 128, 30, 3), ("wrn-16-2", 128, 30, 3), ("wrn-10-1", 128, 30, 3)],
                  compile_models=("wrn-28-10",), workers=8, data_repeats=3,
                  overhead=("wrn-28-10", 128, 20, 3), scaling=("wrn-28-10", (128, 256, 512), 15, 3)),
    # Seconds, for tests: tiny model, tiny batches, synthetic data.
    "smoke": Preset(models=[("wrn-10-1", 16, 2, 2)], workers=1, data_batches=3, data_repeats=2,
                    overhead=("wrn-10-1", 16, 2, 2), scaling=("wrn-10-1", (8, 16), 1, 1),
                    flops_models=("wrn-10-1", "wrn-28-10"), train_per_class=8, threads=1),
}


# ----------------------------------------------------------------------------- timing helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds of fn(), the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median(values) -> float:
    return float(statistics.median(values)) if values else float("nan")


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> int | None:
    """Peak bytes allocated by PyTorch on a CUDA device since the last reset; None on CPU."""
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def process_max_rss() -> int | None:
    """The process's peak resident memory in bytes (CPU runs; process-wide, never reset)."""
    try:
        import resource
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except Exception:
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({os.cpu_count()} cores)"


def device_slug(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key in ("H200", "H100", "A100", "L40S", "L4", "A10G"):
            if key in name:
                return key.lower()
        return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24]
    return f"cpu{os.cpu_count()}"


def peak_flops(device: torch.device) -> tuple[float | None, str]:
    """(peak FLOP/s used for MFU, its source); None where MFU is not meaningful."""
    if device.type != "cuda":
        return None, "CPU: MFU is not meaningful here; FLOP/s are reported instead"
    name = torch.cuda.get_device_name(device)
    if "H100" in name or "H200" in name:
        return PEAK_BF16_FLOPS, PEAK_SOURCE
    return None, f"no stated peak for {name}; see the measured matmul rate"


def parse_model(name: str) -> tuple[int, int]:
    if name in MODELS:
        return MODELS[name]
    m = re.fullmatch(r"wrn-(\d+)-(\d+)", name)
    if not m:
        raise ValueError(f"model names look like wrn-28-10, got {name!r}")
    return int(m.group(1)), int(m.group(2))


# ----------------------------------------------------------------------------- data
def synthetic_cifar(train_per_class: int = 8, test_per_class: int = 4, seed: int = 0) -> Cifar100:
    """A small learnable stand-in with CIFAR-100's class names (for smoke runs and tests)."""
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic_cifar100(tmp, train_per_class=train_per_class,
                                 test_per_class=test_per_class, seed=seed)
        return load_cifar100(tmp, verify=False, download=False)


def load_data(data_root: str | None = None, npz: str | None = None,
              synthetic: bool = False) -> Cifar100:
    if synthetic:
        return synthetic_cifar()
    if npz:
        from prepare_gpu_data import load_npz
        return load_npz(npz)
    return load_cifar100(data_root, download=False)


def bench_subset(data: Cifar100, train_per_class: int | None = None):
    """The benchmark's K = 25 random-class subset (class seed 0)."""
    return make_subset(data, select_classes("random", data, K, CLASS_SEED), train_per_class)


# ----------------------------------------------------------------------------- the baseline
def _torchvision():
    import torchvision
    return torchvision


def baseline_dataset_class():
    """torchvision's CIFAR100 with two ways in; __getitem__ (PIL.Image.fromarray + transform)
    and __len__ are torchvision's own.

    - `BaselineCIFAR100(root, ...)`: the stock loader of the pickles, except that the md5 check
      of the files is skipped (a repacked copy with identical content has other md5s; the
      content is checked by ccql_utils.data.load_cifar100 instead).
    - `BaselineCIFAR100.from_arrays(images, labels, transform)`: the same object over arrays
      (uint8 [N, 3, 32, 32]), for the GPU machine, which gets the subset as an npz.
    """
    torchvision = _torchvision()
    from torchvision.datasets.vision import VisionDataset

    class BaselineCIFAR100(torchvision.datasets.CIFAR100):
        def _check_integrity(self) -> bool:
            folder = os.path.join(self.root, self.base_folder)
            return all(os.path.isfile(os.path.join(folder, name))
                       for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            import pickle
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        @classmethod
        def from_arrays(cls, images: np.ndarray, labels, transform=None, classes=()):
            self = cls.__new__(cls)
            VisionDataset.__init__(self, None, transform=transform)
            self.train = True
            self.data = np.ascontiguousarray(np.asarray(images).transpose(0, 2, 3, 1))  # HWC, as torchvision
            self.targets = [int(t) for t in labels]
            self.classes = list(classes)
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
            return self

    return BaselineCIFAR100


def baseline_transform():
    """RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor, Normalize (CIFAR-100 stats)."""
    T = _torchvision().transforms
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])


def baseline_loader(subset, batch: int, workers: int, device: torch.device):
    dataset = baseline_dataset_class().from_arrays(subset.train_images, subset.train_labels,
                                                   baseline_transform(), subset.class_names)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers,
                                       pin_memory=device.type == "cuda")


def _cycle(loader):
    while True:
        yield from loader


def measure_baseline(subset, model_name: str, batch: int, steps: int, repeats: int,
                     device: torch.device, workers: int, warmup_steps: int | None = None,
                     lr: float = 0.1) -> dict:
    """Images/s of a public-script style training loop (see module docstring)."""
    depth, width = parse_model(model_name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the public WideResNet scripts set it
    loader = baseline_loader(subset, batch, workers, device)
    torch.manual_seed(0)
    model = WideResNet(depth, width, K).to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    batches = _cycle(loader)
    stats = {"loss": 0.0, "correct": 0, "seen": 0, "steps": 0}

    def run(n: int) -> None:
        for _ in range(n):
            inputs, targets = next(batches)
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            loss = criterion(outputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            stats["loss"] += loss.item()
            _, predicted = outputs.max(1)
            stats["correct"] += predicted.eq(targets).sum().item()
            stats["seen"] += targets.size(0)
            stats["steps"] += 1

    reset_peak_memory(device)
    try:
        warm = time_call(lambda: run(warmup_steps if warmup_steps is not None else max(1, steps // 3)),
                         device)
        times = [time_call(lambda: run(steps), device) for _ in range(repeats)]
    finally:
        batches.close()  # shuts the DataLoader's workers down
    t = median(times)
    return {"path": "baseline", "model": model_name, "batch": batch, "steps": steps,
            "repeats": repeats, "workers": workers, "precision": "fp32" + ("/tf32" if
            device.type == "cuda" and torch.backends.cudnn.allow_tf32 else ""),
            "memory_format": "NCHW", "compile": False, "warmup_s": warm, "times_s": times,
            "images_per_s": steps * batch / t, "step_ms": 1e3 * t / steps,
            "peak_memory_bytes": peak_memory(device),
            "mean_loss": stats["loss"] / max(1, stats["steps"])}


# ----------------------------------------------------------------------------- our path
def make_trainer(data: Cifar100, model_name: str, batch: int, device: torch.device,
                 compile: bool = False, loss: str = "ce", lr: float = 0.1, epochs: int = 200,
                 train_per_class: int | None = None, precision: str = "auto",
                 run_dir: str | None = None) -> Trainer:
    depth, width = parse_model(model_name)
    config = TrainConfig(loss=loss, classes="random", num_classes=K, class_seed=CLASS_SEED, seed=0,
                         train_per_class=train_per_class, depth=depth, width=width, epochs=epochs,
                         batch_size=batch, lr=lr, precision=precision, device=str(device),
                         compile=compile)
    if run_dir is None:
        run_dir = tempfile.mkdtemp(prefix="ccql-bench-")
        atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
    return Trainer(config, data, run_dir, progress=False)


def fit_train_loader(trainer: Trainer, n: int) -> None:
    """Give the trainer a training loader of exactly n images (its subset cycled), so that one
    train_epoch is n / batch full steps (no remainder batch, no recompilation for it)."""
    src = trainer.train_loader
    index = torch.arange(n, device=src.labels.device) % len(src)
    trainer.train_loader = DeviceLoader(src.images[index].cpu().numpy(),
                                        src.labels[index].cpu().numpy(), src.device,
                                        seed=src.seed, channels_last=src.channels_last)


def measure_ours(trainer: Trainer, steps: int, repeats: int, warmup_epochs: int = 1) -> dict:
    """Images/s of Trainer.train_epoch over `steps` full batches, median of `repeats` epochs."""
    batch = trainer.config.batch_size
    fit_train_loader(trainer, steps * batch)
    device = trainer.device
    reset_peak_memory(device)
    losses = []
    warm = [time_call(lambda: losses.append(trainer.train_epoch(0)[0]), device)
            for _ in range(warmup_epochs)]
    times = [time_call(lambda e=r: losses.append(trainer.train_epoch(1 + e)[0]), device)
             for r in range(repeats)]
    t = median(times)
    c = trainer.config
    return {"path": "ours", "model": f"wrn-{c.depth}-{c.width}", "batch": batch, "steps": steps,
            "repeats": repeats, "workers": 0,
            "precision": "bf16 autocast" if trainer.use_bf16 else "fp32",
            "memory_format": "channels_last" if device.type == "cuda" else "NCHW",
            "compile": bool(c.compile), "warmup_s": sum(warm), "times_s": times,
            "images_per_s": steps * batch / t, "step_ms": 1e3 * t / steps,
            "peak_memory_bytes": peak_memory(device), "mean_loss": losses[-1]}


def add_flops(row: dict, flops: dict, device: torch.device) -> dict:
    per_image = flops.get(row["model"], {}).get("train")
    if per_image:
        row["tflops_per_s"] = row["images_per_s"] * per_image / 1e12
        peak, _ = peak_flops(device)
        row["mfu"] = row["images_per_s"] * per_image / peak if peak else None
    return row


# ----------------------------------------------------------------------------- parts
def count_flops(model_names, num_classes: int = K) -> dict:
    """{model: {forward, backward, train (FLOP per image), parameters}} on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode
    out = {}
    for name in model_names:
        depth, width = parse_model(name)
        with torch.device("meta"):
            model = WideResNet(depth, width, num_classes)
            x = torch.randn(2, 3, 32, 32)
            y = torch.randint(0, num_classes, (2,))
        model.train()
        with FlopCounterMode(display=False) as fwd:
            loss = F.cross_entropy(model(x), y)
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
        f, b = fwd.get_total_flops() / 2, bwd.get_total_flops() / 2
        out[name] = {"forward": f, "backward": b, "train": f + b,
                     "parameters": count_parameters(model)}
    return out


def measure_data_ours(subset, device: torch.device, batch: int, repeats: int) -> dict:
    """DeviceLoader: shuffled, cropped, flipped, normalised batches of one epoch, images/s."""
    loader = DeviceLoader(subset.train_images, subset.train_labels, device, seed=0,
                          channels_last=device.type == "cuda")

    def epoch(e: int) -> None:
        for _ in loader.train_batches(e, batch):
            pass

    warm = time_call(lambda: epoch(0), device)
    times = [time_call(lambda e=r: epoch(1 + e), device) for r in range(repeats)]
    t = median(times)
    return {"path": "ours (DeviceLoader, on device)", "images": len(loader), "batch": batch,
            "warmup_s": warm, "times_s": times, "epoch_s": t, "images_per_s": len(loader) / t}


def measure_data_baseline(subset, device: torch.device, batch: int, workers: int,
                          repeats: int, max_batches: int | None = None) -> dict:
    """DataLoader + PIL transforms (+ the copy to the device), whole epochs as a training loop
    sees them: from iter(loader) (workers start) to the last batch, images/s. The time to the
    first batch (worker start-up) is also reported apart."""
    loader = baseline_loader(subset, batch, workers, device)
    limit = len(loader) if max_batches is None else min(max_batches, len(loader))
    startup, times, images = [], [], 0
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        it = iter(loader)
        images = 0
        for i in range(limit):
            x, y = next(it)
            x, y = x.to(device), y.to(device)
            images += len(y)
            if i == 0:
                startup.append(time.perf_counter() - start)
        synchronize(device)
        times.append(time.perf_counter() - start)
        del it  # worker shutdown is not timed
    t = median(times)
    return {"path": f"baseline (DataLoader + PIL, {workers} workers)", "images": images,
            "batch": batch, "workers": workers, "startup_s": startup, "times_s": times,
            "epoch_s": t, "images_per_s": images / t}


def measure_overhead(trainer: Trainer, steps: int, repeats: int) -> dict:
    """Trainer.train_epoch vs a bare loop over the same augmented batches, already on the device.

    Both use the trainer's model (compiled or not), loss and optimizer, alternately; the
    overhead is the median over repeats of (trainer time / bare time) - 1. The loader's own
    time (augmenting the same batches) is measured apart, to split the overhead.
    """
    batch = trainer.config.batch_size
    fit_train_loader(trainer, steps * batch)
    device = trainer.device
    batches = [(x.clone(), y.clone()) for x, y in trainer.train_loader.train_batches(0, batch)]
    model, forward, loss_fn, optimizer = trainer.model, trainer.forward, trainer.loss_fn, trainer.optimizer

    def bare() -> None:
        model.train()
        for images, labels in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.use_bf16):
                outputs = forward(images)
            loss = loss_fn(outputs.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def ours() -> None:
        trainer.train_epoch(0)

    def loader_only() -> None:
        for _ in trainer.train_loader.train_batches(0, batch):
            pass

    time_call(bare, device), time_call(ours, device)  # warm-up
    t_bare, t_ours, t_loader = [], [], []
    for r in range(repeats):
        pair = (("bare", bare), ("ours", ours)) if r % 2 == 0 else (("ours", ours), ("bare", bare))
        for name, fn in pair:
            (t_bare if name == "bare" else t_ours).append(time_call(fn, device))
        t_loader.append(time_call(loader_only, device))
    ratios = [o / b for o, b in zip(t_ours, t_bare)]
    c = trainer.config
    return {"model": f"wrn-{c.depth}-{c.width}", "batch": batch, "steps": steps, "repeats": repeats,
            "compile": bool(c.compile), "bare_s": t_bare, "trainer_s": t_ours, "loader_s": t_loader,
            "bare_images_per_s": steps * batch / median(t_bare),
            "trainer_images_per_s": steps * batch / median(t_ours),
            "overhead": median(ratios) - 1,
            "overhead_of_medians": median(t_ours) / median(t_bare) - 1,
            "loader_share": median(t_loader) / median(t_bare)}


# ----------------------------------------------------------------------------- the record
class Record:
    """Results of one run, written (JSON + markdown) after every part so a cut-off run leaves
    what it measured."""

    def __init__(self, kind: str, device: torch.device, out_dir: Path, settings: dict,
                 stem: str | None = None):
        self.device = device
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
        self.stem = stem or f"{kind}-{device_slug(device)}-{date}"
        peak, source = peak_flops(device)
        self.data: dict[str, Any] = {
            "kind": kind, "device": device_name(device), "device_type": device.type,
            "environment": environment_record(), "torch_threads": torch.get_num_threads(),
            "load_average_start": _loadavg(), "peak_flops": peak, "peak_source": source,
            "backend_flags": backend_flags(), "settings": settings, "flops": {},
            "throughput": [], "errors": [], "notes": [], "seconds": {}}
        self.started = time.perf_counter()

    def part(self, name: str, fn: Callable[[], Any]):
        """Run one part; an exception is recorded (with its traceback) and the run goes on."""
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            return fn()
        except Exception as exc:  # a broken part must not lose the others
            self.data["errors"].append({"part": name, "error": f"{type(exc).__name__}: {exc}",
                                        "traceback": traceback.format_exc()})
            print(f"[bench] {name} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return None
        finally:
            self.data["seconds"][name] = time.perf_counter() - start
            self.write()

    def write(self) -> tuple[Path, Path]:
        self.data["load_average_end"] = _loadavg()
        self.data["total_seconds"] = time.perf_counter() - self.started
        if self.device.type == "cpu":
            self.data["process_max_rss_bytes"] = process_max_rss()
        json_path = self.out_dir / f"{self.stem}.json"
        md_path = self.out_dir / f"{self.stem}.md"
        atomic_write_text(json_path, json.dumps(_jsonable(self.data), indent=2) + "\n")
        atomic_write_text(md_path, render_markdown(self.data))
        return json_path, md_path


def _loadavg():
    with contextlib.suppress(OSError, AttributeError):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def backend_flags() -> dict:
    flags = {"cudnn_benchmark": torch.backends.cudnn.benchmark,
             "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
             "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}
    if torch.cuda.is_available():
        flags["cudnn_version"] = torch.backends.cudnn.version()
        flags["cuda"] = torch.version.cuda
    return flags


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def default_out_dir() -> Path:
    """$OUT when set (the device tool returns files from there), else benchmarks/results."""
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS_DIR


# ----------------------------------------------------------------------------- markdown
def _fmt(value, spec=".0f", none="-"):
    if value is None or (isinstance(value, float) and value != value):
        return none
    return format(value, spec)


def _mib(n):
    return None if n is None else n / 2**20


def ratio_rows(rows: list[dict]) -> list[dict]:
    """ours / baseline images/s for each (model, batch) measured both ways."""
    out = []
    for base in (r for r in rows if r["path"] == "baseline"):
        for ours in (r for r in rows if r["path"] == "ours" and r["model"] == base["model"]
                     and r["batch"] == base["batch"]):
            out.append({"model": base["model"], "batch": base["batch"], "compile": ours["compile"],
                        "ratio": ours["images_per_s"] / base["images_per_s"]})
    return out


def render_markdown(d: dict) -> str:
    env = d["environment"]
    lines = [f"# {d['kind']}: {d['device']}", "",
             f"- date (UTC): {env.get('date_utc')}; commit: `{env.get('commit')}`; torch "
             f"{env.get('torch')}; python {env.get('python')}; torch threads {d.get('torch_threads')}",
             f"- load average at start / end: {d.get('load_average_start')} / {d.get('load_average_end')}",
             f"- MFU peak: {d['peak_source']}",
             f"- settings: `{json.dumps(_jsonable(d['settings']))}`", ""]
    if d.get("gpu"):
        g = d["gpu"]
        lines += ["## GPU", "", "| | |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in g.items()]
        lines.append("")
    if d["flops"]:
        lines += ["## Model FLOPs per training image (torch.utils.flop_counter, K = 25 head)", "",
                  "| model | parameters | forward GFLOP | backward GFLOP | train GFLOP |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for name, f in d["flops"].items():
            lines.append(f"| {name} | {f['parameters'] / 1e6:.2f}M | {f['forward'] / 1e9:.3f} | "
                         f"{f['backward'] / 1e9:.3f} | {f['train'] / 1e9:.3f} |")
        lines.append("")
    if d["throughput"]:
        lines += ["## Training throughput (median of repeats, after warm-up)", "",
                  "| path | model | batch | precision | layout | compile | workers | images/s | "
                  "ms/step | TFLOP/s | MFU | peak mem MiB | warm-up s |",
                  "| --- | --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in d["throughput"]:
            lines.append(
                f"| {r['path']} | {r['model']} | {r['batch']} | {r['precision']} | "
                f"{r['memory_format']} | {'yes' if r['compile'] else 'no'} | {r['workers']} | "
                f"{_fmt(r['images_per_s'], ',.0f')} | {_fmt(r['step_ms'], '.1f')} | "
                f"{_fmt(r.get('tflops_per_s'), '.2f')} | "
                f"{_fmt(None if r.get('mfu') is None else 100 * r['mfu'], '.1f')}{'%' if r.get('mfu') else ''} | "
                f"{_fmt(_mib(r.get('peak_memory_bytes')), ',.0f')} | {_fmt(r['warmup_s'], '.1f')} |")
        ratios = ratio_rows(d["throughput"])
        if ratios:
            lines += ["", "ours / baseline (same run): " + "; ".join(
                f"{r['model']} b{r['batch']}{' compiled' if r['compile'] else ''}: {r['ratio']:.2f}x"
                for r in ratios)]
        lines.append("")
    if d.get("data_path"):
        dp = d["data_path"]
        lines += ["## Data path alone (images/s)", "", "| path | images/s |", "| --- | ---: |"]
        for key in ("ours", "baseline"):
            if dp.get(key):
                lines.append(f"| {dp[key]['path']} | {_fmt(dp[key]['images_per_s'], ',.0f')} |")
        if dp.get("ratio"):
            lines += ["", f"ratio ours / baseline: **{dp['ratio']:.1f}x**"]
        if dp.get("epoch_share") is not None:
            lines += [f"data path share of a training epoch: **{100 * dp['epoch_share']:.2f}%**"]
        lines.append("")
    if d.get("overhead"):
        o = d["overhead"]
        lines += ["## Trainer overhead over a bare loop (same model, loss, batches on the device)", "",
                  f"- {o['model']}, batch {o['batch']}, {o['steps']} steps x {o['repeats']} repeats"
                  f"{', compiled' if o['compile'] else ''}: bare {_fmt(o['bare_images_per_s'], ',.0f')} "
                  f"images/s, trainer {_fmt(o['trainer_images_per_s'], ',.0f')} images/s",
                  f"- overhead: **{100 * o['overhead']:.1f}%** (median of paired ratios; "
                  f"{100 * o['overhead_of_medians']:.1f}% from the medians); the loader alone "
                  f"takes {100 * o['loader_share']:.1f}% of the bare loop's time", ""]
    if d.get("scaling"):
        lines += ["## Batch size scaling (ours)", "",
                  "| model | batch | compile | images/s | peak mem MiB |",
                  "| --- | ---: | --- | ---: | ---: |"]
        for r in d["scaling"]:
            lines.append(f"| {r['model']} | {r['batch']} | {'yes' if r['compile'] else 'no'} | "
                         f"{_fmt(r['images_per_s'], ',.0f')} | {_fmt(_mib(r.get('peak_memory_bytes')), ',.0f')} |")
        lines.append("")
    if d.get("epochs"):
        lines += render_epochs(d)
    if d.get("goals"):
        lines += ["## Goals", "", "| goal | measured | target | met |", "| --- | ---: | ---: | --- |"]
        for g in d["goals"]:
            lines.append(f"| {g['goal']} | {g['measured']} | {g['target']} | "
                         f"{'yes' if g['met'] else ('no' if g['met'] is False else 'n/a')} |")
        lines.append("")
    if d.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in d["notes"]] + [""]
    if d["errors"]:
        lines += ["## Errors", ""] + [f"- {e['part']}: `{e['error']}`" for e in d["errors"]] + [""]
    secs = ", ".join(f"{k} {v:.0f}s" for k, v in d.get("seconds", {}).items())
    lines += [f"Wall time: {d.get('total_seconds', 0):.0f} s ({secs}).", ""]
    return "\n".join(lines)


def render_epochs(d: dict) -> list[str]:
    e = d["epochs"]
    lines = ["## Real epochs, K = 25 (Trainer.train_epoch + evaluate)", "",
             "| loss | lr | epoch | train loss | train acc | test loss | test acc | train s | eval s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for loss, run in e.get("runs", {}).items():
        for row in run["rows"]:
            lines.append(f"| {loss} | {run['lr']} | {row['epoch']} | {row['train_loss']:.4f} | "
                         f"{row['train_acc']:.3f} | {row['test_loss']:.4f} | {row['test_acc']:.3f} | "
                         f"{row['train_s']:.2f} | {row['eval_s']:.2f} |")
    lines.append("")
    for key, label in (("steady_epoch_s", "steady epoch (train + eval), s"),
                       ("steady_train_images_per_s", "steady training images/s"),
                       ("one_time_s", "one-time cost in the first epoch (first epoch minus a steady "
                        "one: compiling the last-batch and evaluation graphs), s"),
                       ("compile_full_batch_graph_s", "one-time cost of compiling the full-batch "
                        "training graph (throughput table's warm-up), s"),
                       ("est_200_epochs_from_table_rate_min", "200 epochs of the subset's training images at the "
                        "table's compiled rate (training only), minutes"),
                       ("est_200_epochs_min", "estimated 200-epoch K = 25 run, minutes"),
                       ("est_200_epochs_k100_min", "estimated 200-epoch K = 100 run, minutes"),
                       ("checkpoint_s", "one checkpoint write (Trainer.run writes one per epoch by default), s"),
                       ("est_200_epochs_with_checkpoints_min",
                        "estimated 200-epoch K = 25 run with a checkpoint every epoch, minutes")):
        if e.get(key) is not None:
            lines.append(f"- {label}: **{e[key]:.2f}**")
    if e.get("checks"):
        lines.append(f"- checks: {e['checks']}")
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- the CPU/any-device run
def run_benchmark(args) -> Record:
    preset = PRESETS[args.preset]
    if args.models:
        preset.models = [(m, args.batch or 128, args.steps or 4, args.repeats or 3)
                         for m in args.models.split(",")]
    if args.workers is not None:
        preset.workers = args.workers
    device = torch.device(args.device if args.device != "auto" else
                          ("cuda" if torch.cuda.is_available() else "cpu"))
    threads = args.threads or preset.threads
    if threads:
        torch.set_num_threads(threads)
    if args.compile is not None:
        preset.compile_models = tuple(m for m, *_ in preset.models) if args.compile else ()
    if device.type != "cuda" and preset.compile_models:
        preset.compile_models = ()  # inductor on a CPU is not what these numbers are about
    parts = set(args.parts.split(","))
    data = load_data(args.data_root, args.npz, args.synthetic or args.preset == "smoke")
    subset = bench_subset(data, preset.train_per_class)
    settings = {"preset": args.preset, "models": preset.models, "compile_models": preset.compile_models,
                "baseline_workers": preset.workers, "data": data.folder,
                "subset": {"k": K, "class_seed": CLASS_SEED, "train_images": len(subset.train_labels),
                           "classes": list(subset.class_names)}, "parts": sorted(parts)}
    record = Record("bench", device, Path(args.out) if args.out else default_out_dir(), settings,
                    stem=args.stem)
    load = record.data["load_average_start"]
    if device.type == "cpu" and load and load[0] > 0.5 * (os.cpu_count() or 1):
        record.data["notes"].append(
            f"the CPU was shared (1-min load average {load[0]} on {os.cpu_count()} cores at the "
            f"start): with PyTorch's default {os.cpu_count()} threads every parallel op then "
            f"waits for a descheduled thread (up to ~100x slower steps were seen), so this run "
            f"used {torch.get_num_threads()} thread(s); absolute rates are depressed and noisy, "
            f"ratios from the same run less so")
    if device.type == "cpu":
        record.data["notes"].append(
            "CPU: MFU is not meaningful; the CPU may be shared with other work (see the load "
            "average), which depresses and scatters the numbers. Re-measure with "
            "`python benchmarks/bench.py --preset cpu --data-root ../shared/data`.")
    flops = record.part("flops", lambda: count_flops(preset.flops_models)) or {}
    record.data["flops"] = flops
    rows = record.data["throughput"]

    if "throughput" in parts:
        for model_name, batch, steps, repeats in preset.models:
            variants = [False] + ([True] if model_name in preset.compile_models else [])
            for compiled in variants:
                def ours(m=model_name, b=batch, s=steps, r=repeats, c=compiled):
                    trainer = make_trainer(data, m, b, device, compile=c,
                                           train_per_class=preset.train_per_class)
                    return add_flops(measure_ours(trainer, s, r), flops, device)
                row = record.part(f"ours {model_name} b{batch}{' compiled' if compiled else ''}", ours)
                if row:
                    rows.append(row)
            if preset.baseline:
                row = record.part(f"baseline {model_name} b{batch}", lambda m=model_name, b=batch,
                                  s=steps, r=repeats: add_flops(measure_baseline(
                                      subset, m, b, s, r, device, preset.workers), flops, device))
                if row:
                    rows.append(row)
        record.data["ratios"] = ratio_rows(rows)

    if "data" in parts:
        dp = record.data["data_path"] = {}
        dp["ours"] = record.part("data ours", lambda: measure_data_ours(subset, device, 128,
                                                                        preset.data_repeats))
        dp["baseline"] = record.part("data baseline", lambda: measure_data_baseline(
            subset, device, 128, preset.workers, preset.data_repeats, preset.data_batches))
        if dp["ours"] and dp["baseline"]:
            dp["ratio"] = dp["ours"]["images_per_s"] / dp["baseline"]["images_per_s"]
        record.write()

    if "overhead" in parts and preset.overhead:
        m, b, s, r = preset.overhead
        record.data["overhead"] = record.part("overhead", lambda: measure_overhead(
            make_trainer(data, m, b, device, train_per_class=preset.train_per_class), s, r))

    if "scaling" in parts and preset.scaling:
        m, batches, s, r = preset.scaling
        scaling = record.data["scaling"] = []
        for b in batches:
            row = record.part(f"scaling {m} b{b}", lambda b=b: measure_ours(
                make_trainer(data, m, b, device, train_per_class=preset.train_per_class), s, r))
            if row:
                scaling.append(row)

    record.data["goals"] = cpu_goals(record.data) if device.type == "cpu" else []
    record.write()
    return record


def cpu_goals(d: dict) -> list[dict]:
    goals = []
    dp = d.get("data_path") or {}
    if dp.get("ratio") is not None:
        goals.append({"goal": "on-device batch augmentation vs DataLoader + PIL (2-core CPU)",
                      "measured": f"{dp['ratio']:.1f}x", "target": ">= 10x", "met": dp["ratio"] >= 10})
    o = d.get("overhead")
    if o:
        goals.append({"goal": "trainer overhead over the bare loop (2-core CPU)",
                      "measured": f"{100 * o['overhead']:.1f}%", "target": "<= 5%",
                      "met": o["overhead"] <= 0.05})
    return goals


def print_summary(d: dict) -> None:
    """A concise table on stdout."""
    print(f"\n== {d['kind']} on {d['device']} (torch {d['environment'].get('torch')}, "
          f"threads {d.get('torch_threads')}, load {d.get('load_average_start')})")
    for r in d.get("throughput", []):
        mfu = f"  MFU {100 * r['mfu']:.1f}%" if r.get("mfu") else ""
        print(f"  {r['path']:8s} {r['model']:9s} b{r['batch']:<4d} {r['precision']:13s} "
              f"{'compiled' if r['compile'] else 'eager   '} {r['images_per_s']:10,.1f} img/s{mfu}")
    for r in d.get("ratios", []) or []:
        print(f"  ours/baseline {r['model']} b{r['batch']}{' compiled' if r['compile'] else ''}: "
              f"{r['ratio']:.2f}x")
    dp = d.get("data_path") or {}
    for key in ("ours", "baseline"):
        if dp.get(key):
            print(f"  data {dp[key]['path']}: {dp[key]['images_per_s']:,.0f} img/s")
    if dp.get("ratio"):
        print(f"  data ratio ours/baseline: {dp['ratio']:.1f}x")
    if d.get("overhead"):
        print(f"  trainer overhead: {100 * d['overhead']['overhead']:.1f}% "
              f"(loader alone {100 * d['overhead']['loader_share']:.1f}%)")
    for r in d.get("scaling", []) or []:
        mem = _mib(r.get("peak_memory_bytes"))
        print(f"  scaling {r['model']} b{r['batch']}{' compiled' if r['compile'] else ''}: "
              f"{r['images_per_s']:,.1f} img/s"
              + (f", peak {mem:,.0f} MiB" if mem else ""))
    for g in d.get("goals", []) or []:
        print(f"  goal: {g['goal']}: {g['measured']} (target {g['target']}) "
              f"{'MET' if g['met'] else ('NOT MET' if g['met'] is False else 'n/a')}")
    for e in d.get("errors", []):
        print(f"  ERROR in {e['part']}: {e['error']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Training-speed benchmarks (see the module docstring).")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--data-root", default=None, help="CIFAR-100 (default CCQL_DATA_ROOT, ./data)")
    parser.add_argument("--npz", default=None, help="the subset packed by prepare_gpu_data.py")
    parser.add_argument("--synthetic", action="store_true", help="a small generated stand-in")
    parser.add_argument("--models", default=None, help="comma-separated, e.g. wrn-10-1,wrn-16-2")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="baseline DataLoader workers")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--parts", default="throughput,data,overhead,scaling")
    parser.add_argument("--out", default=None, help="output folder (default $OUT or benchmarks/results)")
    parser.add_argument("--stem", default=None, help="file name stem (default bench-<device>-<date>)")
    args = parser.parse_args(argv)
    record = run_benchmark(args)
    paths = record.write()
    print_summary(record.data)
    print(f"\nwrote {paths[0]} and {paths[1]}")
    return 1 if record.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
