"""Many runs at once on a real Ray cluster on this CPU (tiny settings): the same metrics as one
after another, concurrently, spread over the two nodes of a simulated cluster; a killed worker's
run resumes; two drivers train a run once; runs that stack train as one task; clear errors. Skipped, visibly, without Ray (pip install -e '.[cluster]')."""
import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from ccql_utils import TrainConfig, load_run
from ccql_utils.execution.scheduler import ExecutorError, connect, obtain
from conftest import run_context

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[cluster]'")
pytestmark = pytest.mark.cluster
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def configs(n=3, epochs=4, **overrides):
    base = dict(loss="ql", num_classes=5, train_per_class=40, depth=10, width=1, epochs=epochs,
                lr=0.05, device="cpu")
    return {f"seed {s}": TrainConfig(**{**base, "seed": s, **overrides}) for s in range(n)}


def one_thread_reference(ctx, configs):
    """The `local` result with one torch thread, as each Ray CPU task trains (1 CPU, 1 thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return obtain(ctx, configs)
    finally:
        torch.set_num_threads(threads)


def without_seconds(run):
    return run.history.drop(columns="seconds")


@pytest.fixture(scope="module")
def local_ray():
    """A two-node Ray cluster on this machine (one CPU per node), joined by address as a real
    cluster is. Every node and the driver use the loopback address: Ray otherwise sends the
    driver to the interface address, where nothing listens (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
    is Ray's switch for single-machine addresses; set for the node processes and this one)."""
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster
    ray.shutdown()
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    single_machine = pytest.MonkeyPatch()
    single_machine.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    if os.environ.get("CCQL_RAY_READY"):  # run_tests.sh starts the other tests now
        Path(os.environ["CCQL_RAY_READY"]).touch()
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    single_machine.undo()
    del os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"]


def interval(run):
    start = dt.datetime.fromisoformat(run.status["started"])
    return start, dt.datetime.fromisoformat(run.status["finished"])


@pytest.mark.slow
def test_ray_gives_the_metrics_of_local_runs_and_runs_them_concurrently_on_both_nodes(
        local_ray, synthetic_data, tmp_path):
    runs = configs(n=2, epochs=4)
    expected = one_thread_reference(run_context(tmp_path / "local", synthetic_data, runs_per_gpu=1), runs)
    got = obtain(run_context(tmp_path / "ray", synthetic_data, executor="ray"), runs)
    for label in runs:
        assert got[label].finished
        pd.testing.assert_frame_equal(without_seconds(got[label]), without_seconds(expected[label]))
    (a_start, a_end), (b_start, b_end) = (interval(r) for r in got.values())
    assert a_start < b_end and b_start < a_end, "the two runs did not overlap in time"
    assert len({r.status["ray_node"] for r in got.values()}) == 2, "both runs on one node"


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_its_run_resumes_to_the_uninterrupted_result(
        local_ray, synthetic_data, tmp_path):
    runs = configs(n=1, epochs=6)
    expected = one_thread_reference(run_context(tmp_path / "local", synthetic_data, runs_per_gpu=1), runs)
    ctx = run_context(tmp_path / "ray", synthetic_data, executor="ray")
    result = {}
    driver = threading.Thread(target=lambda: result.update(obtain(ctx, runs)))
    driver.start()
    status = next(iter(runs.values()))
    run_dir = ctx.store.path(status)
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and killed is None:
        run = load_run(run_dir) if run_dir.exists() else None
        if run is not None and run.state == "running" and len(run.history) >= 2:
            killed = run.status["pid"]
            os.kill(killed, signal.SIGKILL)  # the process that trains: Ray's worker
        time.sleep(0.05)
    driver.join(timeout=600)
    assert killed is not None, "never saw the run in training"
    run = result["seed 0"]
    assert run.finished and run.status["resumed_from_epoch"] >= 2 and run.status["ray_pid"] != killed
    pd.testing.assert_frame_equal(without_seconds(run), without_seconds(expected["seed 0"]))
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".") and p.name != ".lock") == []


@pytest.mark.slow
def test_two_drivers_submitting_one_experiment_train_each_run_once(local_ray, tmp_path, synthetic_root):
    """Two processes join the cluster by its address, as two users' drivers would."""
    command = [sys.executable, "-m", "ccql_utils", "run", "k25_random", "--preset", "tiny",
               "--device", "cpu", "--epochs", "1", "--executor", "ray", "--runs-dir", str(tmp_path),
               "--data-root", str(synthetic_root), "--unverified-data", "--quiet",
               "--address", local_ray.address]
    drivers = [subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [d.communicate(timeout=900) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], [e[-2000:] for _, e in outputs]
    run_dirs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(run_dirs) == 3
    for run_dir in run_dirs:
        run = load_run(run_dir)
        assert run.finished and run.status["resumed_from_epoch"] == 0 and len(run.history) == 1


@pytest.mark.slow
def test_ray_trains_runs_that_stack_as_one_task_with_the_local_stack_result(
        local_ray, synthetic_data, tmp_path):
    runs = {**configs(n=1, epochs=2), "CE": next(iter(configs(n=1, epochs=2, loss="ce").values()))}
    expected = one_thread_reference(run_context(tmp_path / "local", synthetic_data, runs_per_gpu=2), runs)
    got = obtain(run_context(tmp_path / "ray", synthetic_data, executor="ray", runs_per_gpu=2), runs)
    assert [got[label].status.get("stacked_runs", 1) for label in runs] == [2, 2]
    assert len({got[label].status["ray_pid"] for label in runs}) == 1, "the stack was split over tasks"
    for label in runs:
        assert got[label].finished
        pd.testing.assert_frame_equal(without_seconds(got[label]), without_seconds(expected[label]))


def test_a_loss_registered_in_the_driver_trains_on_the_workers_with_the_local_result(
        local_ray, synthetic_data, tmp_path):
    """A loss defined in a notebook (module __main__, not importable by the workers) is shipped
    with the task by value, under the code hash its run id names."""
    from ccql_utils.core.losses import LOSSES
    from ccql_utils.core.user_losses import register_loss
    notebook = {"__name__": "__main__"}
    exec("import torch.nn.functional as F\n\ndef ray_loss(outputs, labels, beta=0.1):\n"
         "    return F.cross_entropy(outputs, labels) + beta * outputs.pow(2).mean()\n", notebook)
    register_loss("ray_loss", notebook["ray_loss"], beta=0.1)
    try:
        runs = configs(n=1, epochs=2, loss="ray_loss")
        expected = one_thread_reference(run_context(tmp_path / "local", synthetic_data, runs_per_gpu=1), runs)
        got = obtain(run_context(tmp_path / "ray", synthetic_data, executor="ray"), runs)
    finally:
        LOSSES.pop("ray_loss")
    for label in runs:
        assert got[label].finished and got[label].status["ray_pid"] != os.getpid()
        pd.testing.assert_frame_equal(without_seconds(got[label]), without_seconds(expected[label]))


def test_missing_ray_names_the_extra_and_writes_nothing(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails
    with pytest.raises(ExecutorError, match=r"pip install -e '\.\[cluster\]'"):
        obtain(run_context(tmp_path / "runs", synthetic_data, executor="ray"), configs(n=1))
    assert not (tmp_path / "runs").exists()


def test_an_unreachable_address_fails_at_once_with_the_fix():
    if ray.is_initialized():
        ray.shutdown()
    start = time.time()
    with pytest.raises(ExecutorError, match="no Ray cluster answers at 127.0.0.1:1.*ray start --head"):
        connect("127.0.0.1:1")
    assert time.time() - start < 30


def test_a_gpu_request_on_a_cluster_without_gpus_is_refused_before_anything_runs(
        local_ray, synthetic_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ExecutorError, match="device 'cuda' asked for, but the Ray cluster has no GPUs"):
        obtain(run_context(tmp_path / "runs", synthetic_data, executor="ray"), configs(n=1, device="cuda"))
    assert not (tmp_path / "runs").exists()


def test_a_port_that_is_not_ray_fails_in_seconds_instead_of_hanging():
    """A service that accepts connections but does not speak Ray's gRPC (here: one that never
    answers) made ray.init wait forever."""
    import socket
    import threading
    if ray.is_initialized():
        ray.shutdown()
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    start = time.time()
    with pytest.raises(ExecutorError, match="answers, but not as a Ray cluster.*ray start --head"):
        connect(f"127.0.0.1:{server.getsockname()[1]}")
    assert time.time() - start < 30
    server.close()
