"""EK-FAC: ours versus kronfluence's per-module EK-FAC, both against exact, per layer.

Two workloads, 600 train x 40 test, all 6 layers, damping 1e-2, 1e-1 and 1, float32:
`digits`, the digits CNN of the benchmarks (`_common.trained_digits`: width 8, seed 0),
and `wide`, a second digits CNN (width 12, hidden 48) trained with seed 1 on another
split. Each method runs in a process of its own (peak RSS its own) and fits and scores
once per damping (kronfluence refits for every damping; so do we, for the same count).
kronfluence uses its defaults (one label sampled from the model per example for the
Fisher; `benchmarks/_kronfluence.py` converts its scores to our convention and
`benchmarks/_check_kronfluence.py` proves the conversion). Ours uses its defaults
(`fisher="expected"`: the expectation over classes, `class_tol=0.01`). The accurate
strategy `pcg` (CG preconditioned by EK-FAC) is printed when it is registered, "n/a"
otherwise.

Cost in training epochs: the CPU time of all-layer `ekfac` (fit, and fit plus one test
example's scores) divided by the CPU time of one forward+backward epoch over the training
set (batch 64), on one thread (CPU time, so that other jobs on the machine distort the
ratio less; one thread, because the CPU time of several counts the time they spend
waiting on each other, which a loaded machine inflates). An epoch takes 0.05-0.1 s here,
so one timing moves by tens of percent: the epoch and the fit are timed in turn,
`EPOCH_REPEATS` times each (default 15, after one untimed round), so that a drift of the
machine's speed hits both; the table gives the ratio of the best times and the median of
the ratios of each fit to the epochs around it, the steadier of the two.

    python benchmarks/ekfac_vs_kronfluence.py
    EPOCHS_ONLY=1 python benchmarks/ekfac_vs_kronfluence.py    # the epochs table only
"""

from __future__ import annotations

import os
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import LR, run_benchmark, save_result, trained_digits
from _kronfluence import kronfluence_layer_scores

from captum_layerinf import EKFACSettings, LayerInfluence
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.influence.strategies import available_strategies
from captum_layerinf.models import DigitsVGG
from captum_layerinf.training import accuracy, train_classifier

DAMPINGS = (1e-2, 1e-1, 1.0)
# A subset, e.g. WORKLOADS=wide, runs only those workloads.
WORKLOADS = tuple(os.environ.get("WORKLOADS", "digits,wide").split(","))
METHODS = ("exact", "ekfac", "ekfac_sampled", "kronfluence", "pcg")


def workload(name: str, n_train: int, n_test: int):
    """`(model, train, test, test_accuracy)` of a workload."""
    if name == "digits":
        model, train, test, _, acc = trained_digits(n_train, n_test)
        return model, train, test, acc
    torch.manual_seed(1)
    train, test = load_digits_split(n_train, n_test, seed=1)
    model = train_classifier(DigitsVGG(width=12, hidden=48), train, epochs=40, lr=LR, seed=1)
    return model, train, test, accuracy(model, test)


# Timed fits of the epochs table (each: fit and one test example's scores, epochs around it).
EPOCH_REPEATS = int(os.environ.get("EPOCH_REPEATS", "15"))


def epoch_seconds(model, train, batch_size: int = 64) -> float:
    """CPU time of one forward+backward pass over the training set."""
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size)
    start = time.process_time()
    for x, y in loader:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    seconds = time.process_time() - start
    model.zero_grad()
    return seconds


def ekfac_epochs(model, train, test, settings: EKFACSettings, repeats: int = EPOCH_REPEATS):
    """All-layer EK-FAC's CPU time in epochs: fit, and fit plus one test example's scores.

    After an untimed round, epochs and fits are timed in turn, `repeats` fits between
    `repeats + 1` epochs. Returns per measure `(best, median)`: the ratio of the best
    times, and the median over the fits of the fit's time divided by the mean of the
    epochs timed just before and after it (a drift of the machine's speed hits both).
    """
    x, y = test.tensors

    def fit_and_score() -> tuple[float, float]:
        li = LayerInfluence(model, train, hessian=settings)
        start = time.process_time()
        li._fit("layers", False)
        fitted = time.process_time()
        li.influence((x[:1], y[:1]))
        return fitted - start, time.process_time() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        epoch_seconds(model, train)
        fit_and_score()
        epochs, timed = [epoch_seconds(model, train)], {"fit": [], "fit + 1 test": []}
        for _ in range(repeats):
            fit, total = fit_and_score()
            timed["fit"].append(fit)
            timed["fit + 1 test"].append(total)
            epochs.append(epoch_seconds(model, train))
    finally:
        torch.set_num_threads(threads)
    around = [(a + b) / 2 for a, b in zip(epochs[:-1], epochs[1:], strict=True)]
    return {
        k: (min(v) / min(epochs), statistics.median(t / e for t, e in zip(v, around, strict=True)))
        for k, v in timed.items()
    }


EPOCH_SETTINGS = {
    "default": EKFACSettings(),
    "class_tol=0": EKFACSettings(class_tol=0.0),
    "sampled": EKFACSettings(fisher="sampled"),
}


def print_epochs(epochs: dict) -> None:
    print(
        f"\nall-layer ekfac in training epochs (CPU time, one thread, {EPOCH_REPEATS} fits; "
        "best: ratio of the best times; median: of each fit to the epochs around it)\n"
    )
    print("| setting | fit, best | fit, median | fit + 1 test, best | fit + 1 test, median |")
    print("|---|---:|---:|---:|---:|")
    for setting, e in epochs.items():
        (fb, fm), (tb, tm) = e["fit"], e["fit + 1 test"]
        print(f"| {setting} | {fb:.2f} | {fm:.2f} | {tb:.2f} | {tm:.2f} |")


def run_method(job: str, n_train: int, n_test: int, out: Path) -> None:
    warnings.filterwarnings("ignore")
    name, method = job.split(":")
    model, train, test, acc = workload(name, n_train, n_test)
    layers = LayerInfluence(model, train).layer_names
    if method == "pcg" and "pcg" not in available_strategies():
        save_result(out, job, torch.zeros(0), float("nan"), layers=layers, missing=True)
        return
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
        extra["epochs"] = {
            k: ekfac_epochs(model, train, test, v) for k, v in EPOCH_SETTINGS.items()
        }
    save_result(out, job, torch.stack(scores), min(seconds), **extra)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def slope(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / (b * b).sum())


def report(name: str, r: dict, n_train: int, n_test: int) -> None:
    layers = r["exact"]["layers"]
    print(
        f"\n## {name}: test accuracy {r['exact']['accuracy']:.1%}, {n_train} train x "
        f"{n_test} test, {len(layers)} layers, float32\n"
    )
    print("Pearson with exact (slope: scores ≈ slope x exact)\n")
    print(
        "| damping | layer | ours ekfac | ours ekfac, sampled labels | kronfluence | pcg | "
        "ours vs kronfluence |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    below = []
    for d, damping in enumerate(DAMPINGS):
        ex = r["exact"]["scores"][d]
        for i, layer in enumerate(layers):
            cells, value = [], {}
            for m in ("ekfac", "ekfac_sampled", "kronfluence", "pcg"):
                if r[m].get("missing"):
                    cells.append("n/a")
                    continue
                s = r[m]["scores"][d][i]
                value[m] = pearson(s, ex[i])
                cells.append(f"{value[m]:.3f} ({slope(s, ex[i]):.2f}x)")
            both = pearson(r["ekfac"]["scores"][d][i], r["kronfluence"]["scores"][d][i])
            print(f"| {damping:g} | {layer} | " + " | ".join(cells) + f" | {both:.3f} |")
            if round(value["ekfac"], 3) < round(value["kronfluence"], 3):
                below.append(
                    f"damping {damping:g}, {layer}: {value['ekfac']:.3f} < "
                    f"{value['kronfluence']:.3f}"
                )
    print(f"\nours below kronfluence in {len(below)} of {len(DAMPINGS) * len(layers)} cells:")
    for line in below:
        print(f"- {line}")
    print("\nseconds per damping (fit + scores, all layers) and peak RSS\n")
    print("| method | " + " | ".join(f"λ={d:g}" for d in DAMPINGS) + " | peak RSS (MiB) |")
    print("|---|" + "---:|" * (len(DAMPINGS) + 1))
    for m in METHODS:
        if r[m].get("missing"):
            print(f"| {m} | " + " | ".join("n/a" for _ in DAMPINGS) + " | n/a |")
            continue
        t = " | ".join(f"{s:.1f}" for s in r[m]["per_damping"])
        print(f"| {m} | {t} | {r[m]['peak_mib']:.0f} |")
    kf, ours = r["kronfluence"]["seconds"], r["ekfac"]["seconds"]
    print(f"\nours ekfac vs kronfluence (best damping each): {kf / ours:.1f}x faster")
    print_epochs(r["ekfac"]["epochs"])


def main() -> None:
    if os.environ.get("EPOCHS_ONLY"):
        warnings.filterwarnings("ignore")
        for w in WORKLOADS:
            model, train, test, _ = workload(w, 600, 40)
            print(f"\n## {w}")
            epochs = {k: ekfac_epochs(model, train, test, s) for k, s in EPOCH_SETTINGS.items()}
            print_epochs(epochs)
        return
    jobs = tuple(f"{w}:{m}" for w in WORKLOADS for m in METHODS)
    ran = run_benchmark(__doc__, __file__, jobs, run_method, n_train=600, n_test=40)
    if ran is None:
        return
    args, results = ran
    for w in WORKLOADS:
        r = {m: results[f"{w}:{m}"] for m in METHODS}
        report(w, r, args.n_train, args.n_test)


if __name__ == "__main__":
    main()
