"""Small seeded problems shared by the tests (float64 where tolerances are tight)."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from captum_layerinf._utils.stats import rel_err  # noqa: F401  (re-exported to the tests)
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.training import train_classifier


def pytest_configure(config):
    """Under pytest-xdist each worker gets one torch thread, and so do its subprocesses.

    The workers already share the cores; more threads per worker only oversubscribe them
    (OpenMP threads spin-waiting on each other were measured up to ~100x slower).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def _schedule_rank(item) -> int:
    """0: the notebooks (the longest tests), 1: the zoo, 2: other slow tests, 3: the rest."""
    if "zoo" in item.keywords:
        return 1
    if "slow" not in item.keywords:
        return 3
    return 0 if item.path.name == "test_tutorials.py" else 2


def pytest_collection_modifyitems(config, items):
    """Slow tests run first (notebooks first of all); `cuda` tests are skipped without CUDA.

    Slow first lets pytest-xdist's workers fill in with short tests at the end instead of
    one worker finishing a long tutorial alone (the order is otherwise unchanged).
    """
    items.sort(key=_schedule_rank)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def tiny_cnn(act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """conv-act-conv-act-maxpool-flatten-linear on 8x8 digits: 792 parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        act(),
        nn.Conv2d(3, 4, 3, padding=1),
        act(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _trained(act: type[nn.Module], n_train: int, n_test: int, seed: int = 0):
    torch.manual_seed(seed)
    train, test = load_digits_split(n_train, n_test, seed=seed, dtype=torch.float64)
    model = tiny_cnn(act).double()
    train_classifier(model, train, epochs=15, lr=1e-2, seed=seed)
    return model, train, test


@pytest.fixture(scope="session")
def relu_problem():
    """A ReLU + max-pool CNN trained on 96 digits, and 7 test digits (float64)."""
    return _trained(nn.ReLU, 96, 7)


@pytest.fixture(scope="session")
def tanh_problem():
    """The same CNN with tanh: curved in every layer (float64)."""
    return _trained(nn.Tanh, 96, 7)
