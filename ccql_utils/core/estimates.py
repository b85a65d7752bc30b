"""How long a run takes where it trains: measured rates, so that a lease is planned from numbers
and a paper-scale run is never started by accident on a CPU, where it would take days."""
from __future__ import annotations

import sys

from .config import TrainConfig, resolve_device

# Measured for WRN-28-10, eager, bf16, on the GPU the records below name. An epoch at K = 25
# (12,500 training and 2,500 test images) took a median 1.45-1.64 s and a run's first epoch
# 1.6-19 s (cuDNN autotuning; the `seconds` column of
# results/gpu-short-h200-2026-11-27/*/metrics.csv); a checkpoint 0.39 s
# (benchmarks/results/gpu_round4-h200-2026-11-28.md). Per image: a training step ~1.16e-4 s and,
# taking a forward pass as a third of a step, an evaluation ~3.9e-5 s (1.16e-4 * 12,500 +
# 3.9e-5 * 2,500 = 1.55 s). run_start_s covers building the model, loading the data and the
# slow first epoch.
H200_WRN28_10 = {"train_image_s": 1.16e-4, "eval_image_s": 3.9e-5, "checkpoint_s": 0.4, "run_start_s": 25.0}

# Training images per second on a CPU (measured: benchmarks/results/bench-cpu-*): WRN-28-10 about 13,
# WRN-10-1 about 1,500. Other sizes scale by their convolutions' work, (depth - 4) / 6 * width^2,
# capped at the small model's rate (its time goes to overheads, not arithmetic).
CPU_IMAGES_S = {"wrn28-10": 13.0, "cap": 1500.0}
CPU_REFUSE_HOURS = 2.0  # longer runs need device='cpu' asked for explicitly


def _images(c: TrainConfig) -> tuple[int, int, int]:
    """Per run: training images seen, evaluated images (test and clean training passes), epochs."""
    train = c.num_classes * (c.train_per_class or 500)
    test = c.num_classes * (c.test_per_class or 100)
    every = c.clean_train_eval
    clean = 0 if every is False else c.epochs if every is True else -(-c.epochs // every)
    return c.epochs * train, c.epochs * test + clean * train, c.epochs


def estimate_seconds(config: TrainConfig, rates: dict = H200_WRN28_10) -> float:
    """Seconds one run of `config` takes on one GPU at `rates` (WRN-28-10 only: no other rate is measured),
    start-up, clean-training-set passes and checkpoints included."""
    c = config.resolved()
    if (c.depth, c.width) != (28, 10):
        raise ValueError(f"no measured GPU rate for WRN-{c.depth}-{c.width}; estimates cover WRN-28-10")
    trained, evaluated, epochs = _images(c)
    return (rates["run_start_s"] + trained * rates["train_image_s"] + evaluated * rates["eval_image_s"]
            + -(-epochs // c.checkpoint_every) * rates["checkpoint_s"])


def cpu_hours(config: TrainConfig) -> float:
    """Hours one run of `config` takes at CPU_IMAGES_S (an evaluated image costs a third of a step)."""
    c = config.resolved()
    work = (c.depth - 4) / 6 * c.width ** 2 / ((28 - 4) / 6 * 10 ** 2)
    rate = min(CPU_IMAGES_S["cap"], CPU_IMAGES_S["wrn28-10"] / work)
    trained, evaluated, _ = _images(c)
    return (trained + evaluated / 3) / rate / 3600


def check_cpu_time(configs) -> None:
    """Refuse (ValueError, one line) runs whose device 'auto' means the CPU here and which would take
    over CPU_REFUSE_HOURS there; with device='cpu' asked for, warn with the estimate and go on."""
    slow = {}
    for c in configs:
        hours = cpu_hours(c)
        if hours > CPU_REFUSE_HOURS and resolve_device(c.device).type == "cpu":
            slow[c.run_id()] = (c, hours)
    if not slow:
        return
    c, hours = max(slow.values(), key=lambda item: item[1])
    what = (f"{len(slow)} run(s) of WRN-{c.depth}-{c.width} (the longest {c.run_id()}) would take about "
            f"{'up to ' if len(slow) > 1 else ''}{hours:.0f} h{' each' if len(slow) > 1 else ''} on the CPU")
    if any(c.device == "auto" for c, _ in slow.values()):
        raise ValueError(f"{what}: not training them on the CPU. Train on a GPU (docs/gpu.md: "
                         f"`python -m ccql_utils plan`), or force the CPU with --device cpu")
    print(f"warning: {what}; --device cpu asked for it", file=sys.stderr)
