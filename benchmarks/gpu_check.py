#!/usr/bin/env python3
"""The GPU check: one script that finishes within 8 minutes on one H100/H200.

1. checks the GPU (name, memory, a bf16 matmul rate measured on the spot);
2. the throughput table for WRN-28-10 at batch 128: the public-script baseline (fp32/TF32,
   NCHW, torchvision CIFAR100 + DataLoader + PIL, `.item()` every step), ours eager (bf16,
   channels-last, on-device augmentation) and ours compiled; FLOPs per image and MFU;
3. the trainer's overhead over a bare loop and the data path alone;
4. a few real epochs of CE, QL and CCQL on the K = 25 subset (Trainer.train_epoch + evaluate,
   compile=True, bf16), checking the loss falls and nothing is NaN, and the 200-epoch time
   extrapolated from them;
5. if time is left: the small preset models, and batch 256/512 (throughput, peak memory).

Every part is guarded: a failure is recorded and the rest goes on, a part that would not fit
the time budget is skipped (and says so), and the record (JSON + markdown) is rewritten after
each part, so a run cut off by the time limit still returns what it measured. The record goes
to $OUT when set (the device tool returns files from there), else benchmarks/results/.

The GPU machine has PyTorch but not this package installed: the script puts the repository
root on sys.path. Data: the npz written here by `python benchmarks/prepare_gpu_data.py
--data-root ../shared/data`, carried in `.carry/`. Then, with the device tool:

    run(command="set -o pipefail; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py
                 --commit <hash> 2>&1 | tee $OUT/log", carry=[".carry"], timeout_s=540)

(benchmarks/README.md has the exact line.) The script's own budget is 420 s: parts that would
not fit are skipped, so it normally ends in about 7 minutes.

--dry-run runs the whole flow on the CPU in well under a minute: WRN-10-1, tiny batches, a
synthetic subset packed and read through the same npz path, torch.compile with the 'eager'
backend (dynamo without inductor).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _p in (str(BENCH_DIR), str(REPO_ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import torch  # noqa: E402

import bench  # noqa: E402
from bench import (K, Record, add_flops, bench_subset, count_flops, make_trainer,  # noqa: E402
                   measure_baseline, measure_data_baseline, measure_data_ours, measure_ours,
                   measure_overhead, median, print_summary, ratio_rows, time_call)
from prepare_gpu_data import DEFAULT_PATH, load_npz, save_npz  # noqa: E402

# Initial LRs of the `paper` preset (ccql_utils/presets.py), used if it cannot be imported.
FALLBACK_LR = {"ce": 0.1, "ql": 0.1, "ccql": 0.05}
LOSSES = ("ce", "ql", "ccql")
PAPER_EPOCHS = 200
K100_SCALE = 4  # a K = 100 epoch has 4x the images of a K = 25 one (train and test)


def paper_lr() -> dict:
    try:
        from ccql_utils.presets import PRESETS
        return dict(PRESETS["paper"].lr[25])
    except Exception:
        return dict(FALLBACK_LR)


class Deadline:
    """The script's own time budget: parts that would not fit are skipped."""

    def __init__(self, budget_s: float):
        self.budget_s = budget_s
        self.start = time.perf_counter()

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)

    def allows(self, need_s: float) -> bool:
        return self.left() >= need_s


def matmul_rate(device: torch.device, n: int, reps: int = 10) -> float:
    """FLOP/s of an n x n x n bf16 matrix product (random data), mean of reps after 3 warm-ups."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    t = time_call(lambda: [a @ b for _ in range(reps)], device)
    return 2 * n ** 3 * reps / t


def gpu_info(device: torch.device, dry_run: bool) -> dict:
    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                    multiprocessors=p.multi_processor_count, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,"
                                  "power.draw,power.limit,temperature.gpu,memory.used",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            info["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"not available ({exc})"
    n = 512 if dry_run else 8192
    info[f"bf16_matmul_{n}_tflops"] = round(matmul_rate(device, n, reps=3 if dry_run else 10) / 1e12, 3)
    return info


# ----------------------------------------------------------------------------- real epochs
def real_epochs(data, device, model: str, batch: int, epochs: int, compile: bool, record: Record,
                deadline: Deadline, train_per_class=None, epoch_estimate_s: float = 10.0) -> dict:
    """A few epochs of each loss on the K = 25 subset, LR schedule of a 200-epoch run."""
    lrs = paper_lr()
    out = record.data["epochs"] = {"model": model, "batch": batch, "compile": compile,
                                   "epochs_asked": epochs, "runs": {}, "skipped": []}
    for loss in LOSSES:
        if not deadline.allows(3 * epoch_estimate_s):
            out["skipped"].append(f"{loss}: not enough time left ({deadline.left():.0f} s)")
            continue
        start = time.perf_counter()
        trainer = make_trainer(data, model, batch, device, compile=compile, loss=loss, lr=lrs[loss],
                               epochs=PAPER_EPOCHS, train_per_class=train_per_class)
        run = out["runs"][loss] = {"lr": lrs[loss], "setup_s": time.perf_counter() - start,
                                   "train_images": len(trainer.train_loader),
                                   "test_images": len(trainer.test_loader), "rows": []}
        for epoch in range(epochs):
            if epoch >= 2 and not deadline.allows(2 * epoch_estimate_s):
                out["skipped"].append(f"{loss}: stopped after {epoch} epochs (time)")
                break
            result = {}
            t_train = time_call(lambda: result.update(train=trainer.train_epoch(epoch)), device)
            t_eval = time_call(lambda: result.update(test=trainer.evaluate(trainer.test_loader)), device)
            (train_loss, train_acc), (test_loss, test_acc) = result["train"], result["test"]
            run["rows"].append({"epoch": epoch + 1, "train_loss": train_loss, "train_acc": train_acc,
                                "test_loss": test_loss, "test_acc": test_acc,
                                "train_s": t_train, "eval_s": t_eval})
            print(f"[gpu_check] {loss} epoch {epoch + 1}: train loss {train_loss:.4f} acc {train_acc:.3f}"
                  f"  test loss {test_loss:.4f} acc {test_acc:.3f}  {t_train:.2f}+{t_eval:.2f} s",
                  file=sys.stderr, flush=True)
            record.write()
            if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
                break
        if loss == LOSSES[0] and run["rows"]:
            run["checkpoint_s"] = time_checkpoint(trainer)
        rows = run["rows"]
        run["finite"] = all(math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"]) for r in rows)
        run["loss_falls"] = len(rows) >= 2 and rows[-1]["train_loss"] < rows[0]["train_loss"]
        del trainer
        if device.type == "cuda":
            torch.cuda.empty_cache()
    summarize_epochs(out)
    return out


def time_checkpoint(trainer, repeats: int = 2) -> float | None:
    """Seconds to write one checkpoint (model + optimizer + history), as Trainer.run does after
    every epoch by default (checkpoint_every=1); None if the private hook has changed."""
    save = getattr(trainer, "_save_checkpoint", None)
    if save is None:
        return None
    times = [time_call(save, trainer.device) for _ in range(repeats)]
    with contextlib.suppress(OSError):
        trainer.checkpoint_path.unlink()
    return median(times)


def summarize_epochs(out: dict) -> None:
    runs = out["runs"]
    steady = [r["train_s"] + r["eval_s"] for run in runs.values() for r in run["rows"][1:]]
    steady_train = [r["train_s"] for run in runs.values() for r in run["rows"][1:]]
    first = [run["rows"][0]["train_s"] + run["rows"][0]["eval_s"] for run in runs.values() if run["rows"]]
    if steady:
        epoch_s, train_s = median(steady), median(steady_train)
        images = next(iter(runs.values()))["train_images"]
        one_time = max(0.0, first[0] - epoch_s) if first else 0.0
        out.update(steady_epoch_s=epoch_s, steady_train_images_per_s=images / train_s,
                   one_time_s=one_time,
                   first_epoch_extra_s_per_loss=[max(0.0, f - epoch_s) for f in first],
                   est_200_epochs_min=(PAPER_EPOCHS * epoch_s + one_time) / 60,
                   est_200_epochs_k100_min=(PAPER_EPOCHS * K100_SCALE * epoch_s + one_time) / 60)
    ckpt = [run["checkpoint_s"] for run in runs.values() if run.get("checkpoint_s") is not None]
    if ckpt and out.get("est_200_epochs_min") is not None:
        out["checkpoint_s"] = ckpt[0]
        out["est_200_epochs_with_checkpoints_min"] = out["est_200_epochs_min"] + PAPER_EPOCHS * ckpt[0] / 60
    out["checks"] = {loss: {"finite": run["finite"], "loss_falls": run["loss_falls"]}
                     for loss, run in runs.items()}


# ----------------------------------------------------------------------------- goals
def gpu_goals(d: dict, device: torch.device) -> list[dict]:
    goals = []
    rows = d.get("throughput", [])
    best = [r for r in rows if r["path"] == "ours" and r["model"] == "wrn-28-10" and r["batch"] == 128]
    best = max(best, key=lambda r: r["images_per_s"]) if best else None
    base = next((r for r in rows if r["path"] == "baseline" and r["model"] == "wrn-28-10"
                 and r["batch"] == 128), None)
    on_gpu = device.type == "cuda"
    if best:
        label = "compiled" if best["compile"] else "eager"
        goals.append({"goal": f"WRN-28-10 b128 bf16 MFU ({label})",
                      "measured": "-" if best.get("mfu") is None else f"{100 * best['mfu']:.1f}%",
                      "target": ">= 40%", "met": None if best.get("mfu") is None else best["mfu"] >= 0.40})
        goals.append({"goal": f"WRN-28-10 b128 images/s ({label})", "measured": f"{best['images_per_s']:,.0f}",
                      "target": ">= 10,000", "met": best["images_per_s"] >= 1e4 if on_gpu else None})
        if base:
            ratio = best["images_per_s"] / base["images_per_s"]
            goals.append({"goal": "ours / baseline images/s, WRN-28-10 b128", "measured": f"{ratio:.2f}x",
                          "target": ">= 3x", "met": ratio >= 3 if on_gpu else None})
    dp = d.get("data_path") or {}
    if dp.get("epoch_share") is not None:
        goals.append({"goal": "data path share of a training epoch",
                      "measured": f"{100 * dp['epoch_share']:.2f}%", "target": "<= 2%",
                      "met": dp["epoch_share"] <= 0.02 if on_gpu else None})
    e = d.get("epochs") or {}
    for key, label in (("est_200_epochs_min", "200-epoch K = 25 run, extrapolated from real epochs "
                        "(train + eval each epoch, compilation once)"),
                       ("est_200_epochs_with_checkpoints_min", "the same with Trainer.run's default "
                        "checkpoint after every epoch")):
        if e.get(key) is not None:
            goals.append({"goal": label, "measured": f"{e[key]:.1f} min", "target": "< 5 min",
                          "met": e[key] < 5 if on_gpu else None})
    for loss, c in (e.get("checks") or {}).items():
        goals.append({"goal": f"{loss}: loss falls, nothing NaN", "measured":
                      f"finite={c['finite']}, falls={c['loss_falls']}", "target": "both true",
                      "met": bool(c["finite"] and c["loss_falls"])})
    return goals


# ----------------------------------------------------------------------------- the flow
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="GPU check (see the module docstring).")
    parser.add_argument("--data", default=None, help=f"the packed subset (default {DEFAULT_PATH.relative_to(REPO_ROOT)}; "
                        "in --dry-run a synthetic one)")
    parser.add_argument("--dry-run", action="store_true", help="the whole flow on the CPU, tiny sizes")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="the script's time budget (default 420 s; dry-run 120 s)")
    parser.add_argument("--epochs", type=int, default=None, help="real epochs per loss (default 3; dry-run 2)")
    parser.add_argument("--workers", type=int, default=8, help="baseline DataLoader workers (GPU machine: 16 cores)")
    parser.add_argument("--out", default=None, help="output folder (default $OUT, else benchmarks/results)")
    parser.add_argument("--stem", default=None)
    parser.add_argument("--commit", default=None,
                        help="the commit the tree was sent from (the copy on the GPU machine may have no .git)")
    args = parser.parse_args(argv)

    dry = args.dry_run
    deadline = Deadline(args.budget_s or (120 if dry else 420))
    if not dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible; use --dry-run on a CPU machine", file=sys.stderr)
        return 2
    device = torch.device("cpu" if dry else "cuda")
    if dry:
        torch.set_num_threads(1)  # two threads on a shared 2-core machine stall ~100x (see README)
        # inductor on a CPU would take minutes; the 'eager' backend still runs dynamo's
        # capture (graph breaks, guards, recompilations) through the trainer's torch.compile
        torch.compile = functools.partial(torch.compile, backend="eager")

    # sizes: (model, batch, steps, repeats) of the main rows, and the rest
    if dry:
        main_model, batch, steps, repeats = "wrn-10-1", 16, 2, 2
        small = []
        scaling_batches, workers, epochs, train_per_class = (32,), 1, args.epochs or 2, None
        epoch_estimate, compile_estimate, data_batches = 2.0, 5.0, 3
    else:
        main_model, batch, steps, repeats = "wrn-28-10", 128, 30, 3
        small = [("wrn-16-2", 128, 30, 3), ("wrn-10-1", 128, 30, 3)]
        scaling_batches, workers, epochs, train_per_class = (256, 512), args.workers, args.epochs or 3, None
        epoch_estimate, compile_estimate, data_batches = 5.0, 150.0, None

    tmp = tempfile.TemporaryDirectory(prefix="gpu-check-")
    npz = args.data
    if npz is None and dry:
        npz = save_npz(bench.synthetic_cifar(train_per_class=4, test_per_class=2),
                       Path(tmp.name) / "synthetic_k25.npz")
    npz = Path(npz or DEFAULT_PATH)
    if not npz.is_file():
        print(f"gpu_check: {npz} not found: run `python benchmarks/prepare_gpu_data.py "
              f"--data-root ../shared/data` first and carry .carry/", file=sys.stderr)
        return 2
    data = load_npz(npz)
    subset = bench_subset(data)
    settings = {"dry_run": dry, "data": str(npz), "budget_s": deadline.budget_s,
                "main": {"model": main_model, "batch": batch, "steps": steps, "repeats": repeats},
                "small_models": small, "baseline_workers": workers, "epochs_per_loss": epochs,
                "subset": {"k": K, "train_images": len(subset.train_labels),
                           "test_images": len(subset.test_labels), "classes": list(subset.class_names),
                           "verified": data.verified}}
    out_dir = Path(args.out) if args.out else bench.default_out_dir()
    record = Record("gpu_check" + ("-dryrun" if dry else ""), device, out_dir, settings, stem=args.stem)
    d = record.data
    if args.commit:
        d["environment"]["commit_seen_here"] = d["environment"].get("commit")
        d["environment"]["commit"] = args.commit
    rows = d["throughput"]
    d["notes"].append(f"baseline: torchvision CIFAR100 (arrays in, PIL.Image.fromarray per item), "
                      f"DataLoader with {workers} workers, shuffle, pin_memory on CUDA, fp32 "
                      f"(PyTorch's default TF32 for convolutions on CUDA), NCHW, cudnn.benchmark, "
                      f"CE loss, SGD, .item() of loss and accuracy every step")
    if dry:
        d["notes"].append("dry run on the CPU: sizes are tiny and torch.compile uses the 'eager' "
                          "backend; the numbers only show that the flow works")

    d["gpu"] = record.part("gpu info", lambda: gpu_info(device, dry))
    flops = record.part("flops", lambda: count_flops(["wrn-28-10", "wrn-16-2", "wrn-10-1"])) or {}
    d["flops"] = flops
    compiled_trainer = {}

    def ours(model, b, s, r, compile):
        trainer = make_trainer(data, model, b, device, compile=compile)
        row = add_flops(measure_ours(trainer, s, r), flops, device)
        if compile and model == main_model and b == batch:
            compiled_trainer["t"] = trainer
        return row

    def add(row):
        if row:
            rows.append(row)
            d["ratios"] = ratio_rows(rows)

    # 2. the main throughput table
    add(record.part(f"ours {main_model} b{batch} eager", lambda: ours(main_model, batch, steps, repeats, False)))
    add(record.part(f"baseline {main_model} b{batch}", lambda: add_flops(measure_baseline(
        subset, main_model, batch, steps, repeats, device, workers, warmup_steps=max(2, steps // 3)),
        flops, device)))
    if deadline.allows(compile_estimate + 3 * epoch_estimate):
        add(record.part(f"ours {main_model} b{batch} compiled",
                        lambda: ours(main_model, batch, steps, repeats, True)))
    else:
        d["notes"].append("compiled throughput skipped: not enough time left")

    # 3. overhead (on the compiled trainer when there is one) and the data path
    if deadline.allows(4 * epoch_estimate):
        def overhead():
            trainer = compiled_trainer.pop("t", None) or make_trainer(data, main_model, batch, device)
            return measure_overhead(trainer, max(2, steps // 2 + 5) if not dry else steps, 3 if not dry else 2)
        d["overhead"] = record.part("overhead", overhead)
    compiled_trainer.clear()

    dp = d["data_path"] = {}
    dp["ours"] = record.part("data ours", lambda: measure_data_ours(subset, device, batch, 3))
    dp["baseline"] = record.part("data baseline", lambda: measure_data_baseline(
        subset, device, batch, workers, 3 if not dry else 2, data_batches))
    if dp["ours"] and dp["baseline"]:
        dp["ratio"] = dp["ours"]["images_per_s"] / dp["baseline"]["images_per_s"]
    record.write()

    # 4. real epochs of each loss. The first compiled epoch compiles two more graphs (the
    # epoch's last, smaller batch and evaluation): if the compile seen above says they would
    # not fit, train the epochs eagerly (still real epochs, checks and times) and say so.
    compiled_row = next((r for r in rows if r["path"] == "ours" and r["compile"]
                         and r["model"] == main_model and r["batch"] == batch), None)
    compile_s = compiled_row["warmup_s"] if compiled_row else compile_estimate
    compile_epochs = compiled_row is not None and deadline.allows(
        2.5 * compile_s + 3 * epochs * epoch_estimate + 30)
    if not compile_epochs:
        d["notes"].append(f"real epochs ran eagerly: compiling two more graphs (~{2.5 * compile_s:.0f} s) "
                          f"would not fit the {deadline.left():.0f} s left")
    record.part("real epochs", lambda: real_epochs(
        data, device, main_model, batch, epochs, compile_epochs, record, deadline,
        train_per_class=train_per_class, epoch_estimate_s=epoch_estimate))
    e = d.get("epochs") or {}
    if dp.get("ours") and e.get("steady_train_images_per_s"):
        train_epoch_s = dp["ours"]["images"] / e["steady_train_images_per_s"]
        dp["epoch_share"] = dp["ours"]["epoch_s"] / train_epoch_s
    if e.get("est_200_epochs_min") is not None and compiled_row:
        # a fresh process also compiles the full-batch training graph, done above in the
        # throughput table (its warm-up epoch minus the same steps at the steady rate)
        first_graph = max(0.0, compiled_row["warmup_s"] - median(compiled_row["times_s"]))
        e["compile_full_batch_graph_s"] = first_graph
        e["est_200_epochs_min"] += first_graph / 60
        if e.get("est_200_epochs_with_checkpoints_min") is not None:
            e["est_200_epochs_with_checkpoints_min"] += first_graph / 60
        e["est_200_epochs_k100_min"] += first_graph / 60
        e["est_200_epochs_from_table_rate_min"] = (PAPER_EPOCHS * e["runs"][next(iter(e["runs"]))]["train_images"]
                                                   / compiled_row["images_per_s"] / 60)
    record.write()

    # 5. if time is left: small models, batch scaling
    for model, b, s, r in small:
        if not deadline.allows(30):
            d["notes"].append(f"{model}: skipped (time)")
            continue
        add(record.part(f"ours {model} b{b} eager", lambda m=model, b=b, s=s, r=r: ours(m, b, s, r, False)))
        add(record.part(f"baseline {model} b{b}", lambda m=model, b=b, s=s, r=r: add_flops(
            measure_baseline(subset, m, b, s, r, device, workers), flops, device)))
    scaling = d["scaling"] = [dict(r) for r in rows if r["path"] == "ours" and r["model"] == main_model
                              and r["batch"] == batch]
    for b in scaling_batches:
        for compile in (False, True):
            need = 20 + (compile_estimate if compile else 0)
            if not deadline.allows(need):
                d["notes"].append(f"scaling b{b}{' compiled' if compile else ''}: skipped (time)")
                continue
            row = record.part(f"scaling {main_model} b{b}{' compiled' if compile else ''}",
                              lambda b=b, c=compile: ours(main_model, b, max(4, steps // 2), repeats, c))
            if row:
                scaling.append(row)

    d["goals"] = gpu_goals(d, device)
    paths = record.write()
    print_summary(d)
    if e:
        print(f"  real epochs: steady epoch {e.get('steady_epoch_s', float('nan')):.2f} s, one-time "
              f"{e.get('one_time_s', float('nan')):.1f} s, 200-epoch K=25 est. "
              f"{e.get('est_200_epochs_min', float('nan')):.2f} min, checks {e.get('checks')}")
    print(f"\nwrote {paths[0]} and {paths[1]}  (time left in budget: {deadline.left():.0f} s)")
    tmp.cleanup()
    return 1 if d["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
