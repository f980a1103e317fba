"""A separate process for the torchrun and kill -9 tests: scores a saved problem.

    python _worker.py PROBLEM RESULT [--hessian exact cg ...] [--stored exact ...]
                      [--output-dir DIR] [--slow S]

PROBLEM is a file saved by `save_problem`; RESULT receives (from rank 0) a dict
`{"memory": {hessian: {"scores", "global", "top_indices"}}, "stored": {...}}`: the
strategies of `--hessian` without a store, those of `--stored` with one under DIR.
`--slow S` sleeps S seconds after each chunk written, so that a test can kill the process
between chunks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from captum_layerinf import CGSettings, LayerInfluence, LiSSASettings, PCGSettings  # noqa: E402
from captum_layerinf.influence import ScoreStore  # noqa: E402

# Few iterations: the processes must agree with one process, converged or not.
SETTINGS = {
    "lissa": LiSSASettings(depth=8, power_iterations=3),
    "cg": CGSettings(max_iter=12),
    "pcg": PCGSettings(max_iter=12),
}
BATCH = 8
DAMPING = 0.1


def build_model(act: type[nn.Module] = nn.Tanh) -> nn.Sequential:
    """A small float64 CNN on 8x8 inputs; a tanh makes a block curved (not Gauss-Newton)."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 6),
        act(),
        nn.Linear(6, 4),
    ).double()


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def make_problem(n_train: int, n_test: int, seed: int = 0, act: str = "tanh") -> dict:
    """A seeded model's state and data: `{"state", "train", "test", "act"}`."""
    torch.manual_seed(seed)
    model = build_model(ACTIVATIONS[act]).eval()
    x = torch.rand(n_train + n_test, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (n_train + n_test,))
    return {
        "state": model.state_dict(),
        "train": (x[:n_train], y[:n_train]),
        "test": (x[n_train:], y[n_train:]),
        "act": act,
    }


def save_problem(path: Path, n_train: int, n_test: int, seed: int = 0, act: str = "tanh") -> None:
    """Saves `make_problem(...)` to `path`."""
    torch.save(make_problem(n_train, n_test, seed, act), path)


def load_problem(path: Path) -> tuple[nn.Module, tuple, tuple]:
    """The model and data saved by `save_problem` (loaded with weights_only=True)."""
    return load_problem_from(torch.load(path, weights_only=True))


def load_problem_from(problem: dict) -> tuple[nn.Module, tuple, tuple]:
    """The model (in eval mode) and data of a problem dict."""
    model = build_model(ACTIVATIONS[problem["act"]]).eval()
    model.load_state_dict(problem["state"])
    return model, problem["train"], problem["test"]


def make(model, train, hessian: str, output_dir: str | None) -> LayerInfluence:
    """The LayerInfluence every process and the tests build alike."""
    out = None if output_dir is None else os.path.join(output_dir, hessian)
    return LayerInfluence(
        model,
        train,
        hessian=SETTINGS.get(hessian, hessian),
        damping=DAMPING,
        batch_size=BATCH,
        output_dir=out,
    )


def compute(model, train, test, hessians, output_dir=None) -> dict:
    """Scores, global scores (exact only) and top-3 indices per strategy."""
    results = {}
    for h in hessians:
        li = make(model, train, h, output_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            entry = {"scores": li.influence(test)}
            # From the store, top-k is merged across chunks read back; else from the scores.
            top = li.influence(test, k=3) if output_dir else entry["scores"].topk(3)
            entry["top_indices"] = top.indices
            if h == "exact":
                entry["global"] = li.global_influence(test)
        results[h] = entry
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("problem")
    parser.add_argument("result")
    parser.add_argument("--hessian", nargs="*", default=[])
    parser.add_argument("--stored", nargs="*", default=[])
    parser.add_argument("--output-dir")
    parser.add_argument("--slow", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.slow:
        write = ScoreStore.write

        def slow_write(self, *a, **k):
            write(self, *a, **k)
            time.sleep(args.slow)

        ScoreStore.write = slow_write
    model, train, test = load_problem(Path(args.problem))
    results = {
        "memory": compute(model, train, test, args.hessian),
        "stored": compute(model, train, test, args.stored, args.output_dir),
    }
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(results, args.result)


if __name__ == "__main__":
    main()
