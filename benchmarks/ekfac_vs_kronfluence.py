"""EK-FAC: ours versus kronfluence's per-module EK-FAC, both against exact, per layer.

Workload (issue 4): the digits CNN of the benchmarks (`_common.trained_digits`), 600 train x
40 test, all 6 layers, damping 1e-2, 1e-1 and 1, float32. Each method runs in a process of
its own (peak RSS its own) and fits and scores once per damping (kronfluence refits for
every damping; so do we, for the same count). kronfluence uses its defaults (one label
sampled from the model per example for the Fisher, `benchmarks/_kronfluence.py` converts its
scores to our convention and `benchmarks/_check_kronfluence.py` proves the conversion).
Ours uses its defaults (`fisher="expected"`: the exact expectation over classes).

Also (issue 4 b): the cost of all-layer `ekfac` (fit + scores) divided by the time of one
forward+backward epoch over the training set (batch 64), measured in the same process.

    python benchmarks/ekfac_vs_kronfluence.py
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import run_benchmark, save_result, trained_digits
from _kronfluence import kronfluence_layer_scores

from captum_layerinf import EKFACSettings, LayerInfluence

DAMPINGS = (1e-2, 1e-1, 1.0)
METHODS = ("exact", "ekfac", "ekfac_sampled", "kronfluence")


def epoch_seconds(model, train, batch_size: int = 64, repeats: int = 3) -> float:
    """Best-of-`repeats` time of one forward+backward pass over the training set."""
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x, y in loader:
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
        best = min(best, time.perf_counter() - start)
    model.zero_grad()
    return best


def run_method(method: str, n_train: int, n_test: int, out: Path) -> None:
    warnings.filterwarnings("ignore")
    model, train, test, _, acc = trained_digits(n_train, n_test)
    layers = LayerInfluence(model, train).layer_names
    scores, seconds = [], []
    for damping in DAMPINGS:
        start = time.perf_counter()
        if method == "kronfluence":
            s, _ = kronfluence_layer_scores(model, train, test, layers, damping)
        else:
            hessian = EKFACSettings(fisher="sampled") if method == "ekfac_sampled" else method
            s = LayerInfluence(model, train, hessian=hessian, damping=damping).influence(
                test.tensors
            )
        seconds.append(time.perf_counter() - start)
        scores.append(s.double())
    extra = {"accuracy": acc, "per_damping": seconds, "layers": layers}
    if method == "ekfac":
        extra["epoch"] = epoch_seconds(model, train)
    save_result(out, method, torch.stack(scores), min(seconds), **extra)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def slope(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / (b * b).sum())


def main() -> None:
    ran = run_benchmark(__doc__, __file__, METHODS, run_method, n_train=600, n_test=40)
    if ran is None:
        return
    args, r = ran
    layers = r["exact"]["layers"]
    print(
        f"\nDigits CNN (test accuracy {r['exact']['accuracy']:.1%}), {args.n_train} train x "
        f"{args.n_test} test, {len(layers)} layers, float32\n"
    )
    print("Pearson with exact (slope: scores ≈ slope x exact)\n")
    print(
        "| damping | layer | ours ekfac | ours ekfac, sampled labels | kronfluence | "
        "ours vs kronfluence |"
    )
    print("|---:|---|---:|---:|---:|---:|")
    for d, damping in enumerate(DAMPINGS):
        ex = r["exact"]["scores"][d]
        for i, name in enumerate(layers):
            cells = []
            for m in ("ekfac", "ekfac_sampled", "kronfluence"):
                s = r[m]["scores"][d][i]
                cells.append(f"{pearson(s, ex[i]):.3f} ({slope(s, ex[i]):.2f}x)")
            both = pearson(r["ekfac"]["scores"][d][i], r["kronfluence"]["scores"][d][i])
            print(f"| {damping:g} | {name} | " + " | ".join(cells) + f" | {both:.3f} |")
    print("\nseconds per damping (fit + scores, all layers) and peak RSS\n")
    print("| method | " + " | ".join(f"λ={d:g}" for d in DAMPINGS) + " | peak RSS (MiB) |")
    print("|---|" + "---:|" * (len(DAMPINGS) + 1))
    for m in METHODS:
        t = " | ".join(f"{s:.1f}" for s in r[m]["per_damping"])
        print(f"| {m} | {t} | {r[m]['peak_mib']:.0f} |")
    kf, ours = r["kronfluence"]["seconds"], r["ekfac"]["seconds"]
    print(f"\nours ekfac vs kronfluence (best damping each): {kf / ours:.1f}x faster")
    epoch = r["ekfac"]["epoch"]
    print(
        f"one forward+backward epoch over {args.n_train} images: {epoch:.3f} s; "
        f"all-layer ekfac (fit + scores) = {ours / epoch:.1f} epochs; "
        f"with sampled labels {r['ekfac_sampled']['seconds'] / epoch:.1f} epochs"
    )


if __name__ == "__main__":
    main()
