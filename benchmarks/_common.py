"""Shared benchmark plumbing: the digits workload and one subprocess per method.

Each method runs in a process of its own (`python SCRIPT --method NAME --out DIR ...`), so
its peak resident memory is its own; it saves its scores and timings for the parent.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from captum_layerinf.datasets import load_digits_split
from captum_layerinf.models import DigitsVGG
from captum_layerinf.training import accuracy, train_classifier

LR = 3e-3


def trained_digits(
    n_train: int, n_test: int, epochs: int = 40, checkpoint_dir: Path | None = None, every: int = 8
):
    """The seeded digits CNN of the benchmarks; optionally saves a checkpoint every `every` epochs.

    Returns:
        `(model, train, test, checkpoint_paths, test_accuracy)`.
    """
    torch.manual_seed(0)
    train, test = load_digits_split(n_train, n_test, seed=0)
    paths: list[str] = []

    def save(epoch, model):
        if checkpoint_dir is not None and (epoch + 1) % every == 0:
            paths.append(str(Path(checkpoint_dir) / f"epoch{epoch + 1}.pt"))
            torch.save(model.state_dict(), paths[-1])

    model = train_classifier(DigitsVGG(), train, epochs=epochs, lr=LR, seed=0, on_epoch_end=save)
    return model, train, test, paths, accuracy(model, test)


def save_result(out: Path, method: str, scores: torch.Tensor, seconds: float, **extra) -> None:
    """Saves a method's scores and its time and peak RSS (MiB) for the parent process."""
    torch.save(scores.double(), out / f"{method}.pt")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / f"{method}.json").write_text(json.dumps({"seconds": seconds, "peak_mib": peak, **extra}))


def run_isolated(script: str, method: str, out: Path, args: list[str]) -> dict:
    """Runs one method of `script` in a subprocess; returns its result with the scores."""
    print(f"running {method} ...", flush=True)
    subprocess.run(
        [sys.executable, script, "--method", method, "--out", str(out), *args], check=True
    )
    result = json.loads(Path(out, f"{method}.json").read_text())
    result["scores"] = torch.load(Path(out, f"{method}.pt"))
    return result


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest over layers of max |a - b| / max |b|."""
    return max(float((x - y).abs().max() / y.abs().max()) for x, y in zip(a, b, strict=True))


def method_args(doc: str, n_train: int = 1500, n_test: int = 100) -> argparse.Namespace:
    """Arguments of a benchmark with one subprocess per method (`--method` is internal)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=n_train)
    parser.add_argument("--n-test", type=int, default=n_test)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


def run_benchmark(
    doc: str,
    script: str,
    methods: tuple[str, ...],
    run_method: Callable[..., None],
    n_train: int = 1500,
    n_test: int = 100,
) -> tuple[argparse.Namespace, dict] | None:
    """A benchmark's main: in a child (`--method`), runs one method and returns None;
    in the parent, runs every method in its own process and returns (args, results)."""
    args = method_args(doc, n_train, n_test)
    if args.method:
        run_method(args.method, args.n_train, args.n_test, Path(args.out))
        return None
    sizes = ["--n-train", str(args.n_train), "--n-test", str(args.n_test)]
    with tempfile.TemporaryDirectory() as tmp:
        return args, {m: run_isolated(script, m, Path(tmp), sizes) for m in methods}
