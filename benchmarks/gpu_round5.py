"""Speed round 5 on one GPU: why real WRN-28-10 epochs ran slower compiled than eager (round 4).

  PYTHONPATH=. python3 benchmarks/gpu_round5.py --data-root .carry/k25.npz [--commit SHA] [--budget-s 380] [--dry-run]

Round 4 (H200): real K = 25 epochs at `paper` took 1.44-1.51 s eager but 1.60-1.83 s compiled in
every mode, while a bare loop of full batches ran faster compiled. Parts (record.py, rewritten to
$OUT/gpu_round5.{json,md} after each):
  epochs    real epochs (train + test pass) eager with torch.optim.SGD's default (foreach) step,
            then with fused=True (issue 12's candidate), 4 each.
  profile   torch.profiler over one steady real training epoch (the smaller last batch included):
            eager, then compiled (default mode, dynamic=False, after 2 warm-up epochs). Device time
            by kernel family, kernels launched, and the share of the wall time the GPU ran no kernel.
--dry-run: CPU, tiny sizes, compiled through dynamo's eager backend.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import bench  # noqa: E402
from gpu_round2 import kernel_summary  # noqa: E402
from record import job_arguments, job_record, markdown  # noqa: E402
from ccql_utils import train  # noqa: E402
from ccql_utils.data import load_cifar100  # noqa: E402


def with_fused_sgd(trainer):
    """The trainer's SGD, same settings, with fused=True (one kernel per step on a GPU)."""
    group = trainer.optimizer.param_groups[0]
    trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=group["lr"],
                                        momentum=group["momentum"], weight_decay=group["weight_decay"],
                                        nesterov=group["nesterov"], fused=trainer.device.type == "cuda")
    return trainer


def epochs_part(data, config, name: str, fused: bool, epochs: int) -> dict:
    trainer = bench.make_trainer(data, config)
    rows = bench.real_epochs(data, config, epochs, with_fused_sgd(trainer) if fused else trainer)["epochs"]
    return {"epochs": [{"variant": name, **r, "epoch_s": r["train_s"] + r["eval_s"]} for r in rows]}


def profile_part(data, config, name: str, compile: bool) -> dict:
    """One steady real training epoch under torch.profiler, after 2 warm-up epochs."""
    from torch.profiler import ProfilerActivity, profile
    kept, train.COMPILE_DYNAMIC = train.COMPILE_DYNAMIC, False
    try:
        torch._dynamo.reset()
        trainer = bench.make_trainer(data, dataclasses.replace(config, compile=compile))
        warm = [bench.time_call(lambda e=e: trainer.train_epoch(e), trainer.device) for e in range(2)]
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            wall = bench.time_call(lambda: trainer.train_epoch(2), trainer.device)
        unprofiled = bench.time_call(lambda: trainer.train_epoch(3), trainer.device)
    finally:
        train.COMPILE_DYNAMIC = kept
    summary = kernel_summary(prof, wall)
    families, top = summary.pop("families"), summary.pop("top_kernels")
    return {"profile": {"variant": name, "warm_up_epochs_s": warm, "unprofiled_epoch_s": unprofiled, **summary},
            "families": [{"variant": name, "family": f, **v} for f, v in families.items()],
            "top_kernels": [{"variant": name, **k} for k in top[:12]]}


def main(argv=None) -> int:
    args = job_arguments(__doc__.splitlines()[0], 380, "epochs,profile").parse_args(argv)
    dry = args.dry_run
    device, rec = job_record("gpu_round5", args)

    data = load_cifar100(args.data_root, download=False, verify=not args.unverified_data)
    config = bench.run_config("tiny" if dry else "paper", "ce", device=str(device), compile=False,
                              **({"train_per_class": 20} if dry else {}))
    epochs = 2 if dry else 4
    rec.part("epochs eager, foreach SGD", lambda: epochs_part(data, config, "eager, foreach SGD", False, epochs),
             need_s=15)
    rec.part("epochs eager, fused SGD", lambda: epochs_part(data, config, "eager, fused SGD", True, epochs),
             need_s=15)
    rec.part("profile eager", lambda: profile_part(data, config, "eager", False), need_s=30)
    rec.part("profile compiled", lambda: profile_part(data, config, "compile default, dynamic=False", True),
             need_s=90)
    rec.write()
    print(markdown(rec.data))
    return 1 if rec.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
