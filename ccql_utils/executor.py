"""Executing a set of runs: here (`local`, the default), or concurrently as tasks on a Ray
cluster (`ray`), one GPU per task, else one CPU.

On a GPU, runs of small models that differ only in loss, LR, seed or classes train up to 32 at a
time as one stacked program (stacked.py; 10x the images/s of one WRN-10-1 run, where Ray's
processes sharing a GPU reached 4.4x); `runs_per_gpu` sets how many (1: never stacked). `local`
trains one run or stack after another; `ray` makes each stack one task.

Every figure and sweep is a set of independent runs, so one run per GPU is the unit of scale-out
(data parallelism would split the paper's batch of 128 across GPUs, starve each of them and
change BatchNorm's statistics). The run store stays the single source of truth: a task trains,
resumes or reads its run in the runs folder exactly as `local` does, so that folder (and the
data) must be on a filesystem every worker sees. A task whose worker dies is retried by Ray and
resumes from the run's last checkpoint; two tasks for one run train it once (the run's lock).
Results come back as run records read from the folder, not through Ray's object store.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import asdict
from pathlib import Path

from .config import TrainConfig
from .data import DataError, data_source
from .estimates import check_cpu_time
from .progress import progress_mode
from .runs import FINAL_STATES, Run, RunStore, load_run
from .stacked import plan_stacks
from .train import RunError

EXECUTORS = ("local", "ray")
TASK_RETRIES = 3  # Ray re-runs a task whose worker died this often; each retry resumes the run


class ExecutorError(RuntimeError):
    """The executor cannot start (Ray missing, cluster unreachable, no GPU); the message says the fix."""


def check_executor(executor: str) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    return executor


def run_configs(store: RunStore, configs: dict[str, TrainConfig], executor: str = "local",
                address: str | None = None, runs_per_gpu: int | None = None, name: str = "") -> dict[str, Run]:
    """Every labelled run of `configs` from `store`, trained where needed by `executor`; runs that
    would take hours on a CPU that device 'auto' chose are refused (estimates.check_cpu_time).

    runs_per_gpu: at most this many runs that can be stacked train together as one program
    (stacked.py; None: 32 models under 1M parameters on a GPU, else 1). With `ray`, each stack is
    one task on a GPU of its own, and a run that stacks with no other shares its GPU with up to
    runs_per_gpu - 1 other such tasks."""
    check_executor(executor)
    stored = {label: store.load(c) for label, c in configs.items()}
    todo = {label: store.resolve(c) for label, c in configs.items() if stored[label].state not in FINAL_STATES}
    check_cpu_time(todo.values())
    if executor == "local":
        return store.get_all(configs, name, stack=runs_per_gpu)
    if runs_per_gpu is not None and (int(runs_per_gpu) != runs_per_gpu or runs_per_gpu < 1):
        raise ValueError(f"runs_per_gpu must be an integer >= 1, got {runs_per_gpu}")
    resolved = {label: store.resolve(c) for label, c in configs.items()}
    placements = _train_on_ray(store, todo, address, runs_per_gpu, name) if todo else {}
    runs = {label: load_run(store.runs_dir / c.run_id()) for label, c in resolved.items()}
    for label, where in placements.items():  # which Ray node and process ran it (not stored)
        runs[label].status.update(ray_node=where["node"], ray_pid=where["pid"])
    return runs


def run_keyed(store: RunStore, configs: dict, name_of, executor: str = "local",
              address: str | None = None, runs_per_gpu: int | None = None, name: str = "") -> dict:
    """`run_configs` for configs under any keys (e.g. (label, seed)); name_of(key) is the run's
    label in progress lines. Returns the runs under the same keys."""
    names = {key: name_of(key) for key in configs}
    runs = run_configs(store, {names[key]: c for key, c in configs.items()}, executor, address,
                       runs_per_gpu, name)
    return {key: runs[names[key]] for key in configs}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray: pip install -e '.[cluster]' (or "
                            "pip install 'ray[default]'), or use --executor local") from None
    return ray


def connect(address: str | None = None):
    """ray.init: join `address` (or $RAY_ADDRESS) if given, else start a local cluster."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address and address != "auto":
        _check_reachable(address)  # Ray itself retries an unreachable address for minutes
    # A local cluster listens on the loopback address only, so nothing leaves this machine.
    local = {} if address else {"_node_ip_address": "127.0.0.1"}
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                 include_dashboard=False, **local)
    except Exception as exc:  # ConnectionError, RuntimeError, Ray's own start-up timeouts, ...
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        raise ExecutorError(f"could not connect to {where} ({str(exc).splitlines()[0]}); start it "
                            f"with `ray start --head`, check --address / RAY_ADDRESS, or use "
                            f"--executor local") from None
    return ray


# The client preface of HTTP/2 and an empty SETTINGS frame: a gRPC server (Ray's GCS and its client
# server both are) answers with a SETTINGS frame of its own (RFC 9113, section 3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ExecutorError unless host:port answers as a gRPC server within timeout_s: an unreachable
    address makes Ray retry for minutes, and a port that is not Ray's makes it wait forever."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    advice = "start one with `ray start --head`, check --address / RAY_ADDRESS, or use --executor local"
    try:
        conn = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s)
    except (OSError, ValueError) as exc:
        raise ExecutorError(f"no Ray cluster answers at {address} ({exc}); {advice}") from None
    with conn:
        try:
            conn.sendall(HTTP2_PREFACE)
            reply = conn.recv(9)
        except OSError:  # timed out or reset: whatever listens there is not Ray
            reply = b""
    if len(reply) < 4 or reply[3] != 4:
        raise ExecutorError(f"{address} answers, but not as a Ray cluster (no gRPC reply within "
                            f"{timeout_s:.0f} s); {advice}")


def _train_task(runs_dir: str, data_root: str | None, verify_data: bool, configs: dict) -> dict:
    """A Ray task: obtain a stack of runs (or one run) through the store, as `local` would;
    report where each ran."""
    import ray
    store = RunStore(runs_dir, data_root=data_root, verify_data=verify_data, progress=False)
    runs = store.get_stacked({label: TrainConfig.from_dict(c) for label, c in configs.items()})
    where = {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}
    return {label: {"run_dir": str(run.run_dir), "state": run.state, **where} for label, run in runs.items()}


def _train_on_ray(store: RunStore, todo: dict[str, TrainConfig], address, runs_per_gpu,
                  name) -> dict[str, dict]:
    """Train `todo` as Ray tasks, a stack of runs per task where they stack (stacked.plan_stacks:
    up to runs_per_gpu, or by default 32 small models on a GPU cluster); label -> {"node", "pid"}
    of the task that finished each."""
    ray = connect(address)
    gpus = ray.cluster_resources().get("GPU", 0)
    devices = {c.device for c in todo.values()}
    if devices - {"auto", "cpu"} and not gpus:
        raise ExecutorError(f"device {sorted(devices - {'auto', 'cpu'})[0]!r} asked for, but the Ray "
                            f"cluster has no GPUs; use --device cpu (or auto), or join a cluster with GPUs")
    on_gpu = bool(gpus) and "cpu" not in devices
    stacks = plan_stacks(todo, runs_per_gpu, cuda=on_gpu)
    # A stack fills its GPU; runs that stack with nothing share one, runs_per_gpu at a time.
    share = 1 / (runs_per_gpu or 1)

    def resources(stack):
        return {"num_gpus": 1 if len(stack) > 1 else share, "num_cpus": 1} if on_gpu else {"num_cpus": 1}
    try:  # the workers need the same data: an explicit, absolute path
        data_root = str(Path(data_source(store.data_root)).resolve())
    except DataError:
        data_root = None  # the default folder; a worker downloads it there if it can
    task = ray.remote(max_retries=TASK_RETRIES)(_train_task)
    pending = {task.options(**resources(stack)).remote(
        str(store.runs_dir.resolve()), data_root, store.verify_data,
        {label: asdict(todo[label]) for label in stack}): stack for stack in stacks}
    show = progress_mode(store.progress) != "off"
    if show:
        sizes = sorted({len(s) for s in stacks})
        print(f"[{name}] {len(todo)} run(s) as {len(stacks)} Ray task(s) ({int(gpus)} GPU(s), "
              f"{int(ray.cluster_resources().get('CPU', 0))} CPU(s)); runs per task "
              f"{'/'.join(map(str, sizes))}; a task asks {resources(stacks[-1])}",
              file=sys.stderr, flush=True)
    errors, last, placements = [], "", {}
    while pending:
        done, _ = ray.wait(list(pending), timeout=5.0)
        for ref in done:
            stack = pending.pop(ref)
            try:
                placements.update(ray.get(ref))
            except Exception as exc:  # RayTaskError wraps the worker's exception
                errors.append(f"{', '.join(stack)}: {str(exc).strip().splitlines()[-1]}")
        if show:
            line = _status_line(store, todo)
            if line != last:
                print(f"[{name}] {line}", file=sys.stderr, flush=True)
                last = line
    if errors:
        raise RunError("; ".join(errors))
    return placements


def _status_line(store: RunStore, todo: dict[str, TrainConfig]) -> str:
    """'finished 1, running 2, queued 0 | CE epoch 3/50, QL epoch 2/50'."""
    counts, epochs = {"finished": 0, "running": 0, "queued": 0}, []
    for label, c in todo.items():
        run = load_run(store.runs_dir / c.run_id())
        if run.state in FINAL_STATES:
            counts["finished"] += 1
        elif run.state == "running":
            counts["running"] += 1
            epochs.append(f"{label} epoch {len(run.history)}/{c.epochs}")
        else:
            counts["queued"] += 1
    return ", ".join(f"{k} {v}" for k, v in counts.items()) + (" | " + ", ".join(epochs) if epochs else "")
