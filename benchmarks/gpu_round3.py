"""Speed round 3 on one GPU: many small models in one program, CUDA graphs, the compile cache.

  python benchmarks/gpu_round3.py [--parts stacked,modes,cache] [--dry-run]

Parts (each appends to $OUT/gpu_round3.json as it finishes, so a job cut short keeps what ran):
  stacked  N small WideResNets trained as ONE model: every convolution grouped (groups = N), every
           BatchNorm over the N models' channels, the classifier a batched matmul; each model sees
           its own images (the batches are concatenated along channels). Exactly N separate models
           (ccql_utils/stacked.py; tests/test_stacked.py checks outputs and gradients), one launch
           per layer instead of N. Aggregate training images/s for N = 1..64 against one plain model.
           (Round 2: N separate processes reached 4.4x for WRN-10-1; the goal is >= 10x.)
  modes    WRN-28-10 b128 bf16 channels_last: training images/s eager, torch.compile default,
           "reduce-overhead" (CUDA graphs) and default plus a compiled optimizer step. Each mode's
           first step is recorded, but after the first compiled mode it skips one-time imports and
           may reuse compiled kernels: the cache part is the measure of compile cost.
  cache    the one-time compile cost in a fresh process, twice with one TORCHINDUCTOR_CACHE_DIR
           (cold, then warm: what a second run on the same machine pays).
Bare step loops on random images (throughput does not depend on content). --dry-run: CPU, toy sizes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ccql_utils.stacked import stack_models  # noqa: E402
from ccql_utils.train import compiled_forward  # noqa: E402
from ccql_utils.wrn import WideResNet  # noqa: E402


def stacked_loss(outputs, labels):
    """Sum over the N models of each one's mean cross-entropy: outputs [B, N, K], labels [B, N].
    The parameters are disjoint, so each model gets exactly its own gradient."""
    return F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), reduction="sum") / outputs.shape[0]


def time_steps(step, steps: int, device) -> float:
    """Seconds per step, median of 3 timed blocks after 3 warm-up steps."""
    for _ in range(3):
        step()
    blocks = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        blocks.append((time.perf_counter() - t) / steps)
    return sorted(blocks)[1]


def train_step(forward, optimizer, x, y, loss_fn, device):
    def step():
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4, nesterov=True)


def stacked(depth: int, width: int, ns, batch: int, steps: int, device, compile: str | None = None) -> list[dict]:
    """Rows of aggregate images/s of N stacked models for N in `ns` (the first N the reference);
    compile: a torch.compile mode for every N (None: eager)."""
    rows = []
    for n in ns:
        models = [WideResNet(depth, width, 100) for _ in range(n)]
        model = (models[0] if n == 1 else stack_models(models)).to(device, memory_format=torch.channels_last)
        forward = model if compile is None else compiled_forward(model, compile)
        x = torch.randn(batch, 3 * n, 32, 32, device=device).to(memory_format=torch.channels_last)
        y = torch.randint(0, 100, (batch,) if n == 1 else (batch, n), device=device)
        loss_fn = F.cross_entropy if n == 1 else stacked_loss
        seconds = time_steps(train_step(forward, sgd(model), x, y, loss_fn, device), steps, device)
        rows.append({"model": f"WRN-{depth}-{width}", "models": n, "compile": compile or "eager",
                     "step_s": seconds, "aggregate_images_per_s": n * batch / seconds})
        print(json.dumps(rows[-1]), flush=True)
        del model, models
    for r in rows:
        r["vs_one_model"] = r["aggregate_images_per_s"] / rows[0]["aggregate_images_per_s"]
    return rows


def modes(depth: int, width: int, batch: int, steps: int, device) -> list[dict]:
    rows = []
    for name in ("eager", "compile default", "compile reduce-overhead (CUDA graphs)",
                 "compile default + compiled optimizer step"):
        torch._dynamo.reset()
        model = WideResNet(depth, width, 25).to(device, memory_format=torch.channels_last)
        optimizer = sgd(model)
        x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
        y = torch.randint(0, 25, (batch,), device=device)
        if name != "eager":
            model = torch.compile(model, mode="reduce-overhead" if "reduce" in name else None)
        if "optimizer" in name:
            optimizer.step = torch.compile(optimizer.step)
        step = train_step(model, optimizer, x, y, F.cross_entropy, device)
        t = time.perf_counter()
        step()
        first = time.perf_counter() - t
        seconds = time_steps(step, steps, device)
        rows.append({"mode": name, "first_step_s": first, "step_s": seconds,
                     "images_per_s": batch / seconds})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def cache(depth: int, width: int, device) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as cache_dir:
        for label in ("cold cache", "warm cache"):
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
            t = time.perf_counter()
            out = subprocess.run([sys.executable, __file__, "--compile-once", str(depth), str(width),
                                  "--device", device.type], env=env, capture_output=True, text=True)
            rows.append({"cache": label, "process_s": time.perf_counter() - t, "rc": out.returncode,
                         **(json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else
                            {"error": out.stderr[-500:]})})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def compile_once(depth: int, width: int, device) -> int:
    model = torch.compile(WideResNet(depth, width, 25).to(device, memory_format=torch.channels_last))
    x = torch.randn(128, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    t = time.perf_counter()
    train_step(model, sgd(model), x, torch.randint(0, 25, (128,), device=device), F.cross_entropy, device)()
    if device.type == "cuda":
        torch.cuda.synchronize()
    print(json.dumps({"first_step_s": time.perf_counter() - t}))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="stacked,modes,cache")
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: check the script runs")
    ap.add_argument("--device", default=None)
    ap.add_argument("--compile-once", nargs=2, type=int, metavar=("DEPTH", "WIDTH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu"))
    if args.compile_once:
        return compile_once(*args.compile_once, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out = Path(os.environ.get("OUT", "benchmarks/results")) / "gpu_round3.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "dry_run": args.dry_run, "date_utc":
              time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    small = dict(batch=16, steps=2) if args.dry_run else dict(batch=128, steps=20)
    for part in args.parts.split(","):
        t = time.perf_counter()
        if part == "stacked":
            ns = (1, 2) if args.dry_run else (1, 4, 16, 32, 64)
            record["stacked"] = stacked(10, 1, ns, device=device, **small)
            if not args.dry_run:
                record["stacked"] += stacked(16, 2, (1, 4, 16), device=device, **small)
        elif part == "modes":
            record["modes"] = modes(*((10, 1) if args.dry_run else (28, 10)), device=device, **small)
        elif part == "cache":
            record["cache"] = cache(*((10, 1) if args.dry_run else (28, 10)), device)
        else:
            raise SystemExit(f"unknown part {part!r}")
        record.setdefault("part_seconds", {})[part] = time.perf_counter() - t
        out.write_text(json.dumps(record, indent=1))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
