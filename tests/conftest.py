"""Shared fixtures. Real-data tests read CCQL_DATA_ROOT (as users do) and skip visibly without it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ccql_utils.data import DATA_ROOT_ENV, DataError, load_cifar100, write_synthetic_cifar100

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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
def synthetic_root(tmp_path_factory) -> Path:
    """A small learnable stand-in in torchvision's layout (40 train / 10 test images per class)."""
    root = tmp_path_factory.mktemp("synthetic_cifar")
    write_synthetic_cifar100(root, train_per_class=40, test_per_class=10, seed=0)
    return root


@pytest.fixture(scope="session")
def synthetic_data(synthetic_root):
    return load_cifar100(synthetic_root, verify=False, download=False)
