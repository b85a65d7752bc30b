"""Obtaining runs: `obtain(ctx, configs)` is the one way to get the runs of a set of configurations.

Finished and diverged runs are read from the store without loading data; the others resume from
their checkpoints or train, here one after another (executor `local`) or as Ray tasks (`ray`, one
GPU per task, else one CPU). Small models that differ only in loss, LR, seed or classes train up
to `runs_per_gpu` at a time as one stacked program (stacked.py: 10x one WRN-10-1 run's images/s
on a GPU, where Ray's processes sharing it reached 4.4x), a task per stack.

A run per GPU is the unit of scale-out: data parallelism would split the paper's batch of 128 and
change BatchNorm's statistics. The runs folder (and the data) must be on a filesystem every Ray
worker sees: a task trains there as `local` does, each run under its lock (never trained twice),
and a task whose worker died is retried and resumes from the last checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ..core.config import TrainConfig
from .context import RunContext
from ..core.data import DataError, data_source
from ..core.estimates import check_cpu_time
from ..core.losses import LOSSES
from ..progress import progress_mode
from .store import FINAL_STATES, Run, RunInterrupted, RunStore, _exclusive_lock, _RunFiles, load_run
from ..core.stacked import StackedTrainer, plan_stacks
from ..core.train import RunDiverged, RunError, Trainer

TASK_RETRIES = 3  # Ray re-runs a task whose worker died this often; each retry resumes the run
RAY_ADVICE = "start one with `ray start --head`, check --address / RAY_ADDRESS, or use --executor local"


class ExecutorError(RuntimeError):
    """The executor cannot start (Ray missing, cluster unreachable, no GPU); the message says the fix."""


def obtain(ctx: RunContext, configs: dict, name: str = "", name_of: Callable = str,
           train: bool | None = True) -> dict[object, Run]:
    """The run of every configuration in `configs`, under the same keys (any hashable), from
    `ctx.store`, trained where needed by `ctx.executor`; name: the set's name in progress lines,
    name_of(key) a run's.

    Runs that would take hours on a CPU that device 'auto' chose (estimates.check_cpu_time) are,
    with train=True, a ValueError before anything trains; with train=None the stored runs are
    returned and the missing ones named on stderr; train=False never trains. RunError for damaged
    runs and failed writes, RunInterrupted on Ctrl-C (resumed by the next call), ExecutorError
    when Ray cannot start."""
    store = ctx.store
    resolved = {key: store.resolve(c) for key, c in configs.items()}
    stored = {key: load_run(store.runs_dir / c.run_id()) for key, c in resolved.items()}
    todo = {key: c for key, c in resolved.items() if stored[key].state not in FINAL_STATES}
    names = {key: name_of(key) for key in configs}
    if todo and train is not False:
        try:
            check_cpu_time(todo.values())
        except ValueError as exc:
            if train:
                raise
            print(f"[{name}] {exc}.", file=sys.stderr)
            train = False
    if todo and train is False:
        if progress_mode(store.progress) != "off":
            print(f"[{name}] drawing the {len(configs) - len(todo)} stored run(s); missing: "
                  f"{', '.join(names[key] for key in todo)}", file=sys.stderr)
        return stored
    if ctx.executor == "ray":
        placements = _train_on_ray(ctx, todo, names, name) if todo else {}
        runs = {key: load_run(store.runs_dir / c.run_id()) for key, c in resolved.items()}
        for key, where in placements.items():  # which Ray node and process ran it (not stored)
            runs[key].status.update(ray_node=where["node"], ray_pid=where["pid"])
        return runs
    stack_of = {key: stack for stack in plan_stacks(todo, ctx.runs_per_gpu) for key in stack}
    runs = {key: run for key, run in stored.items() if key not in todo}
    for n, (key, run) in enumerate(stored.items(), 1):
        if progress_mode(store.progress) != "off":
            doing = ("training" if run.state == "absent" else f"{run.describe()}, " +
                     ("read from the store" if key not in todo else "resuming"))
            together = len(stack_of.get(key, ()))
            print(f"[{name}] run {n}/{len(configs)} {names[key]}: {doing}"
                  f"{f' (stack of {together})' if together > 1 else ''} ({run.run_dir.name})",
                  file=sys.stderr, flush=True)
        if key not in runs:
            runs.update(_train(store, {k: resolved[k] for k in stack_of[key]}, names, name))
    return {key: runs[key] for key in configs}


def _train(store: RunStore, configs: dict, names: dict, name: str) -> dict[object, Run]:
    """Train one planned stack (`configs`, resolved), each run under its lock, runs at the same
    epoch as one program. A run another process holds is left to it, then waited for (and
    resumed if it stopped unfinished)."""
    data = store.data  # before creating anything, so a data error leaves no empty run folder
    alone = len(configs) == 1
    with contextlib.ExitStack() as locks:
        by_epoch: dict[int, list] = {}
        for key, c in configs.items():
            run_dir = store.runs_dir / c.run_id()
            lock = _exclusive_lock(run_dir / ".lock", progress_mode(store.progress) == "off", wait=alone)
            if not locks.enter_context(lock) or load_run(run_dir).state in FINAL_STATES:
                continue  # another process trains it (waited for below) or has finished it
            files = _RunFiles(run_dir, c)
            trainer = Trainer(c, data, run_dir, progress=False, name=names[key], on_epoch=files.on_epoch)
            by_epoch.setdefault(len(trainer.history), []).append((trainer, files))
        for group in by_epoch.values():
            _train_group(group, store.progress, name)
    runs = {key: load_run(store.runs_dir / c.run_id()) for key, c in configs.items()}
    for key, run in runs.items():
        if run.state not in FINAL_STATES and not alone:
            runs[key] = _train(store, {key: configs[key]}, names, name)[key]
    return runs


def _train_group(group: list, progress, name: str) -> None:
    """Train (trainer, files) pairs at one epoch, their locks held: one plainly, two or more as
    one stacked program."""
    trainers, files = [t for t, _ in group], [f for _, f in group]
    live = [True] * len(group)

    def diverged(i: int, exc: RunDiverged) -> None:
        live[i] = False
        files[i].diverged(trainers[i], exc)
    for t, f in group:
        f.start(t, **({"stacked_runs": len(group)} if len(group) > 1 else {}))
    try:
        if len(group) > 1:
            StackedTrainer(trainers, progress, f"[{name}] {len(group)} runs stacked", diverged).run()
        else:
            trainers[0].progress = progress
            try:
                trainers[0].run()
            except RunDiverged as exc:
                diverged(0, exc)
    except BaseException as exc:
        stopped = [i for i in range(len(group)) if live[i]]
        for i in stopped:
            files[i].stopped(trainers[i], exc)
        if isinstance(exc, KeyboardInterrupt):
            first, several = trainers[stopped[0]], len(stopped) > 1
            resume = min(trainers[i].checkpointed_epochs for i in stopped)
            raise RunInterrupted(
                f"interrupted: run{'s' if several else ''} "
                f"{', '.join(files[i].run_dir.name for i in stopped)} stopped in epoch "
                f"{len(first.history) + 1}; rerun the same command to resume from epoch {resume + 1}") from None
        raise
    for i in range(len(group)):
        if live[i]:
            files[i].finished(trainers[i])


# ----------------------------------------------------------------------------- Ray
def connect(address: str | None = None):
    """ray.init: join `address` (or $RAY_ADDRESS) if given, else start a local cluster."""
    try:
        import ray
    except ImportError:
        raise ExecutorError("the ray executor needs Ray: pip install -e '.[cluster]' (or "
                            "pip install 'ray[default]'), or use --executor local") from None
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
        raise ExecutorError(f"could not connect to {where} ({str(exc).splitlines()[0]}); "
                            f"{RAY_ADVICE}") from None
    return ray


# The client preface of HTTP/2 and an empty SETTINGS frame: a gRPC server (Ray's GCS and its client
# server both are) answers with a SETTINGS frame of its own (RFC 9113, section 3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """ExecutorError unless host:port answers as a gRPC server within timeout_s: an unreachable
    address makes Ray retry for minutes, and a port that is not Ray's makes it wait forever."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        conn = socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s)
    except (OSError, ValueError) as exc:
        raise ExecutorError(f"no Ray cluster answers at {address} ({exc}); {RAY_ADVICE}") from None
    with conn:
        try:
            conn.sendall(HTTP2_PREFACE)
            reply = conn.recv(9)
        except OSError:  # timed out or reset: whatever listens there is not Ray
            reply = b""
    if len(reply) < 4 or reply[3] != 4:
        raise ExecutorError(f"{address} answers, but not as a Ray cluster (no gRPC reply within "
                            f"{timeout_s:.0f} s); {RAY_ADVICE}")


def _train_task(runs_dir: str, data_root: str | None, verify_data: bool, runs: list,
                user_losses: tuple = ()) -> dict:
    """A Ray task: train `runs`, (name, config) pairs of one stack, as `local` does, with the
    user's losses they need (shipped by value); says where it ran."""
    import ray
    LOSSES.update({spec.name: spec for spec in user_losses})
    store = RunStore(runs_dir, data_root=data_root, verify_data=verify_data, progress=False)
    _train(store, {i: store.resolve(TrainConfig.from_dict(c)) for i, (_, c) in enumerate(runs)},
           {i: label for i, (label, _) in enumerate(runs)}, "")
    return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


def _train_on_ray(ctx: RunContext, todo: dict, names: dict, name: str) -> dict:
    """Train `todo` as Ray tasks, a stack per task (stacked.plan_stacks); key -> {"node", "pid"}
    of the task that trained it."""
    store, runs_per_gpu = ctx.store, ctx.runs_per_gpu
    ray = connect(ctx.address)
    gpus = ray.cluster_resources().get("GPU", 0)
    devices = {c.device for c in todo.values()}
    if devices - {"auto", "cpu"} and not gpus:
        raise ExecutorError(f"device {sorted(devices - {'auto', 'cpu'})[0]!r} asked for, but the Ray "
                            f"cluster has no GPUs; use --device cpu (or auto), or join a cluster with GPUs")
    on_gpu = bool(gpus) and "cpu" not in devices
    stacks = plan_stacks(todo, runs_per_gpu, cuda=on_gpu)
    share = 1 / (runs_per_gpu or 1)  # a stack fills its GPU; lone runs share one, runs_per_gpu at a time

    def resources(stack):
        return {"num_gpus": 1 if len(stack) > 1 else share, "num_cpus": 1} if on_gpu else {"num_cpus": 1}
    try:  # the workers need the same data: an explicit, absolute path
        data_root = str(Path(data_source(store.data_root)).resolve())
    except DataError:
        data_root = None  # the default folder; a worker downloads it there if it can
    task = ray.remote(max_retries=TASK_RETRIES)(_train_task)
    pending = {task.options(**resources(stack)).remote(
        str(store.runs_dir.resolve()), data_root, store.verify_data,
        [(names[key], asdict(todo[key])) for key in stack],
        tuple({todo[key].loss: LOSSES[todo[key].loss] for key in stack if LOSSES[todo[key].loss].code}.values())):
        stack for stack in stacks}
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
                placements.update(dict.fromkeys(stack, ray.get(ref)))
            except Exception as exc:  # RayTaskError wraps the worker's exception
                errors.append(f"{', '.join(names[k] for k in stack)}: {str(exc).strip().splitlines()[-1]}")
        if show:
            line = _status_line(store, todo, names)
            if line != last:
                print(f"[{name}] {line}", file=sys.stderr, flush=True)
                last = line
    if errors:
        raise RunError("; ".join(errors))
    return placements


def _status_line(store: RunStore, todo: dict, names: dict) -> str:
    """'finished 1, running 2, queued 0 | CE epoch 3/50, QL epoch 2/50'."""
    runs = {key: load_run(store.runs_dir / c.run_id()) for key, c in todo.items()}
    done = sum(run.state in FINAL_STATES for run in runs.values())
    running = [f"{names[key]} epoch {len(run.history)}/{todo[key].epochs}"
               for key, run in runs.items() if run.state == "running"]
    return (f"finished {done}, running {len(running)}, queued {len(todo) - done - len(running)}"
            + (" | " + ", ".join(running) if running else ""))


__all__ = ["ExecutorError", "connect", "obtain"]
