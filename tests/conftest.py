"""Shared fixtures. Real-data tests read CCQL_DATA_ROOT (as users do) and skip visibly without it."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest
import torch

from ccql_utils import TrainConfig
from ccql_utils.core.data import DATA_ROOT_ENV, DataError, load_cifar100, write_synthetic_cifar100


def tiny_config(**overrides) -> TrainConfig:
    """A run that trains in seconds on a CPU (WRN-10-1, K = 5, 40 images per class, 2 epochs)."""
    return TrainConfig(**{**dict(loss="ce", classes="random", num_classes=5, seed=0, train_per_class=40,
                                 depth=10, width=1, epochs=2, lr=0.05, device="cpu"), **overrides})


def run_context(runs_dir, data, **settings):
    """A RunContext whose runs train on `data` (loaded again from its folder, in milliseconds for
    the stand-in; its run ids are those of a store given `data` itself), silent unless told."""
    from ccql_utils.execution.context import RunContext
    return RunContext.of(runs_dir=runs_dir, data_root=data.folder, verify_data=data.verified,
                         **{"progress": False, **settings})


def obtain_one(ctx, config, label: str = "run"):
    """The one run of `config` through the scheduler (stored, resumed or trained)."""
    from ccql_utils.execution.scheduler import obtain
    return obtain(ctx, {label: config})[label]


PROJECT_ROOT = Path(__file__).resolve().parent.parent

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests run in several worker processes (run_tests.sh: pytest-xdist): one torch thread each,
    # inherited by the subprocesses they start, or every parallel op of one worker waits for a
    # core the other holds (docs/performance.md, "Threads on a shared CPU").
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# run_tests.sh runs the suite as two pytest processes: CCQL_TESTS=cluster, the Ray tests (marker
# `cluster`), starts first, and once its cluster is up (a Ray node that starts beside busy test
# workers can miss Ray's fixed 30 s start-up wait on a 2-core machine) CCQL_TESTS=parallel runs
# the rest in pytest-xdist workers.
PHASES = {"parallel": lambda item: "cluster" not in item.keywords,
          "cluster": lambda item: "cluster" in item.keywords}


# Modules whose tests take 20-120 s each on 2 cores (the CI log's slowest), besides `slow` ones.
SLOW_MODULES = ("test_browser.py", "test_notebooks.py", "test_gpu_job.py", "test_benchmarks.py",
                "test_gpu_lease.py")


def pytest_collection_modifyitems(config, items):
    phase = os.environ.get("CCQL_TESTS")
    if phase not in PHASES:
        return
    keep = [item for item in items if PHASES[phase](item)]
    config.hook.pytest_deselected(items=[item for item in items if not PHASES[phase](item)])
    # The slow tests first (a stable sort): the workers then end on short tests, not one on a
    # two-minute notebook while the other idles.
    items[:] = sorted(keep, key=lambda item: not ("slow" in item.keywords or item.path.name in SLOW_MODULES))


@pytest.fixture(scope="session")
def real_data():
    """The real CIFAR-100 from CCQL_DATA_ROOT, content-verified; skips when not configured."""
    root = os.environ.get(DATA_ROOT_ENV)
    if not root:
        pytest.skip(f"real CIFAR-100 not configured: set {DATA_ROOT_ENV} to run this test")
    try:
        return load_cifar100(root, download=False)
    except DataError as exc:
        pytest.skip(f"real CIFAR-100 not usable at {root}: {exc}")


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory) -> Path:
    """A folder that every pytest-xdist worker of this session shares (the parent of the
    workers' own temporary folders); one process alone: its own. A reference that several
    workers need is trained there once: the run store lets one process train a run while any
    other that asks for it waits on the run's lock and then reads it."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def synthetic_root(shared_tmp) -> Path:
    """A small learnable stand-in in torchvision's layout (40 train / 10 test images per class),
    written once for all test workers (runs on unverified data are tied to its content)."""
    root = shared_tmp / "synthetic_cifar"
    with open(shared_tmp / "synthetic_cifar.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other workers wait until it is written
        if not (root / "written").exists():
            write_synthetic_cifar100(root, train_per_class=40, test_per_class=10, seed=0)
            (root / "written").touch()
    return root


@pytest.fixture(scope="session")
def synthetic_data(synthetic_root):
    return load_cifar100(synthetic_root, verify=False, download=False)


@pytest.fixture
def committed_records(tmp_path, monkeypatch):
    """load(archive, count) -> a run store holding results/<archive> (count records expected), in
    which loading CIFAR-100 fails: whatever is drawn from it must come from the records alone."""
    from ccql_utils.execution import records
    from ccql_utils.execution import store as runs

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded to redraw finished runs")

    def load(archive: str, count: int | None = None) -> Path:
        imported = records.import_records(PROJECT_ROOT / "results" / archive, tmp_path)
        assert count is None or len(imported) == count, (archive, len(imported))
        monkeypatch.setattr(runs, "load_cifar100", no_data)
        return tmp_path
    return load


@pytest.fixture
def assert_sweep_redraws():
    """check(result, stem): a sweep's final table and LR probe equal figures/<stem>.csv and
    figures/<stem>_lr_probe.csv (the committed figure data)."""
    import pandas as pd

    def check(result, stem: str) -> None:
        figures = PROJECT_ROOT / "figures"
        pd.testing.assert_frame_equal(result.data(), pd.read_csv(figures / f"{stem}.csv"),
                                      check_dtype=False)
        pd.testing.assert_frame_equal(result.extra["lr_table"].drop(columns="run_dir"),
                                      pd.read_csv(figures / f"{stem}_lr_probe.csv"), check_dtype=False)
    return check
