"""Speed round 2 on one GPU: where a WRN-28-10 step spends its time, and what small runs get from
sharing the card.

  python benchmarks/gpu_round2.py [--parts profile,concurrency,optimizer,epoch] [--dry-run]

Parts (each appends to $OUT/gpu_round2.json as it finishes, so a job cut short keeps what ran):
  profile      torch.profiler over 20 eager training steps of WRN-28-10, batch 128,
               bf16, channels_last: device time by kernel family, and the share of the wall time
               the GPU runs no kernel (launch gaps)
  concurrency  aggregate training images/s of N processes each training a small model (WRN-10-1,
               WRN-16-2) on one GPU at once, against one process alone
  optimizer    torch.optim.SGD's default (foreach) step against fused=True, same steps
  epoch        one real-size K = 25 epoch (12,500 training, 2,500 test images): training pass and
               evaluation timed apart, against the training throughput of full batches
Images are random uint8 (throughput does not depend on content). --dry-run: CPU, toy sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import fit_train_loader, make_trainer, run_config, time_call  # noqa: E402
from ccql_utils.data import COARSE_NAMES, FINE_NAMES, FINE_TO_COARSE, Cifar100  # noqa: E402

# Kernel families, matched in this order on the lower-cased kernel name (cuDNN, cuBLAS, CUTLASS
# and ATen names as they appear in torch.profiler on an H100/H200).
FAMILIES = (("batchnorm", ("batch_norm", "bn_", "welford", "batchnorm")),
            ("optimizer", ("multi_tensor", "foreach", "fused_sgd", "sgd")),
            ("convolution", ("conv", "cudnn", "xmma", "implicit", "gemm", "wgrad", "dgrad", "fprop",
                             "cutlass", "sm90")),
            ("copy/cast", ("copy", "memcpy", "memset", "cat_", "to_")),
            ("reduction/loss", ("reduce", "softmax", "nll", "sum", "norm")),
            ("elementwise (relu, add, ...)", ("elementwise", "vectorized", "relu", "threshold", "add",
                                              "mul", "unrolled")))


def random_cifar(train_per_class: int, test_per_class: int, seed: int = 0) -> Cifar100:
    rng = np.random.default_rng(seed)
    coarse = np.asarray(FINE_TO_COARSE, dtype=np.int64)
    split = []
    for per_class in (train_per_class, test_per_class):
        fine = np.repeat(np.arange(100, dtype=np.int64), per_class)
        split += [rng.integers(0, 256, (len(fine), 3, 32, 32), dtype=np.uint8), fine, coarse[fine]]
    return Cifar100(*split, fine_names=FINE_NAMES, coarse_names=COARSE_NAMES, folder="random",
                    verified=False)


def trainer_for(model: str, data, device: str, steps: int, batch: int = 128, protocol: str = "paper"):
    config = run_config(protocol, "ce", model, device=device, batch_size=batch)
    trainer = make_trainer(data, config)
    fit_train_loader(trainer, steps)
    return trainer


def family(name: str) -> str:
    low = name.lower()
    return next((f for f, keys in FAMILIES if any(k in low for k in keys)), "other")


def profile(data, device: str, steps: int) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    trainer = trainer_for("wrn-28-10" if device == "cuda" else "wrn-10-1", data, device, steps)
    for e in range(2):
        time_call(lambda e=e: trainer.train_epoch(e), trainer.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        wall = time_call(lambda: trainer.train_epoch(2), trainer.device)
    return {"model": trainer.config.depth, "steps": steps, **kernel_summary(prof, wall)}


def kernel_summary(prof, wall: float) -> dict:
    """Device time by kernel family and the top kernels of a finished torch.profiler `prof` over
    `wall` seconds, and the share of the wall time the GPU ran no kernel."""
    # Kernels only: an ATen op (aten::cudnn_convolution, ...) also reports the device time of the
    # kernels it launched, so summing every event counts each kernel twice (the first H200 record).
    kernels, launches = {}, 0
    for evt in prof.key_averages():
        if evt.device_type != torch.autograd.DeviceType.CUDA:
            continue
        t = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        kernels[evt.key] = kernels.get(evt.key, 0) + t / 1e6   # microseconds -> s
        launches += evt.count
    busy = sum(kernels.values())
    by_family = {}
    for name, t in kernels.items():
        by_family[family(name)] = by_family.get(family(name), 0) + t
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:25]
    return {"wall_s": wall, "kernel_s": busy, "kernels_launched": launches,
            "gpu_idle_share": 1 - busy / wall if wall else None,
            "families": {f: {"s": t, "share_of_kernel_time": t / busy if busy else None}
                         for f, t in sorted(by_family.items(), key=lambda kv: -kv[1])},
            "top_kernels": [{"name": n[:120], "s": t, "family": family(n)} for n, t in top]}


def worker(args) -> int:
    """One concurrent trainer: warm up, say ready, wait for `go`, train until its stop time."""
    data = random_cifar(args.worker_images // 100 + 1, 2)
    trainer = trainer_for(args.worker, data, args.device, args.steps, protocol="quick")
    trainer.train_epoch(0)
    torch.cuda.synchronize() if args.device == "cuda" else None
    Path(args.sync, f"ready{os.getpid()}").touch()
    go = Path(args.sync, "go")
    while not go.exists():
        time.sleep(0.01)
    stop = float(go.read_text())
    start, images, epoch = time.perf_counter(), 0, 1
    while time.time() < stop:
        trainer.train_epoch(epoch)
        images += args.steps * 128
        epoch += 1
    if args.device == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"images_per_s": images / (time.perf_counter() - start)}))
    return 0


def concurrency(model: str, n: int, device: str, seconds: float, steps: int, tmp: Path) -> dict:
    sync = tmp / f"{model}-{n}"
    sync.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", model, "--device", device, "--sync", str(sync),
           "--steps", str(steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    deadline = time.time() + 120
    while len(list(sync.glob("ready*"))) < n and time.time() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):
            break
        time.sleep(0.05)
    (sync / "go").write_text(str(time.time() + seconds))
    rates = []
    for p in procs:
        out, _ = p.communicate(timeout=seconds + 120)
        if p.returncode == 0:
            rates.append(json.loads(out.strip().splitlines()[-1])["images_per_s"])
    return {"model": model, "processes": n, "finished": len(rates), "seconds": seconds,
            "aggregate_images_per_s": sum(rates), "per_process": rates}


def optimizer(data, device: str, steps: int) -> list[dict]:
    trainer = trainer_for("wrn-28-10" if device == "cuda" else "wrn-10-1", data, device, steps)
    rows = []
    for name, options in (("foreach (default)", {}), ("fused", {"fused": True}), ("foreach (default), again", {})):
        c = trainer.config
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=c.lr, momentum=c.momentum,
                                            weight_decay=c.weight_decay, **options)
        times = [time_call(lambda e=e: trainer.train_epoch(e), trainer.device) for e in range(4)]
        rows.append({"optimizer": name, "images_per_s": steps * c.batch_size / float(np.median(times[1:])),
                     "times_s": times})
    return rows


def epoch(data, device: str, steps: int) -> dict:
    config = run_config("paper", "ce", None if device == "cuda" else "wrn-10-1", device=device)
    trainer = make_trainer(data, config)
    rows = []
    for e in range(3):
        train = time_call(lambda e=e: trainer.train_epoch(e), trainer.device)
        test = time_call(lambda: trainer.evaluate(trainer.test_loader), trainer.device)
        rows.append({"train_s": train, "eval_s": test})
    n = len(trainer.train_loader)
    fit_train_loader(trainer, steps)
    full = [time_call(lambda e=e: trainer.train_epoch(e), trainer.device) for e in range(3, 6)]
    rate = steps * config.batch_size / float(np.median(full[1:]))
    return {"train_images": n, "test_images": len(trainer.test_loader), "epochs": rows,
            "full_batch_images_per_s": rate, "train_pass_at_that_rate_s": n / rate}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="profile,concurrency,optimizer,epoch")
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes")
    p.add_argument("--budget-s", type=float, default=200, help="skip parts that would start later")
    p.add_argument("--out", default=os.environ.get("OUT", "outputs/gpu_round2"))
    p.add_argument("--worker"), p.add_argument("--sync"), p.add_argument("--device", default="cuda")
    p.add_argument("--steps", type=int, default=20), p.add_argument("--worker-images", type=int, default=12800)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    device = "cpu" if a.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_round2: needs a CUDA GPU (or --dry-run)", file=sys.stderr)
        return 2
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu{os.cpu_count()}"}
    t0 = time.time()
    steps = 2 if a.dry_run else 20
    data = random_cifar(4 if a.dry_run else 500, 2 if a.dry_run else 100)
    plan = [("profile", lambda: profile(data, device, steps)),
            ("optimizer", lambda: optimizer(data, device, steps)), ("epoch", lambda: epoch(data, device, steps))]
    n_list = (1, 2) if a.dry_run else (1, 4, 8, 16)
    for model, ns in (("wrn-10-1", n_list), ("wrn-16-2", n_list[::2] if a.dry_run else (1, 8))):
        for n in ns:
            plan.append((f"concurrency {model} x{n}",
                         lambda m=model, n=n: concurrency(m, n, device, 1 if a.dry_run else 5,
                                                          steps if a.dry_run else 50, out / "sync")))
    for name, fn in plan:
        if name.split()[0] not in a.parts.split(","):
            continue
        if time.time() - t0 > a.budget_s:
            record[name] = "skipped: budget"
            continue
        start = time.time()
        try:
            record[name] = fn()
        except Exception as exc:  # keep the other parts' numbers
            record[name] = f"error: {type(exc).__name__}: {exc}"
        print(f"{name}: {time.time() - start:.1f} s  {json.dumps(record[name], default=str)[:400]}", flush=True)
        (out / "gpu_round2.json").write_text(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
