"""Exact layer-wise influence: ours versus Captum's NaiveInfluenceFunction, one run per layer.

Workload: the VGG-style digits CNN (4 conv + 2 linear, 6,562 parameters), trained
to >= 95 % test accuracy, 1500 training x 100 test images, all 6 layers, default settings,
constructors inside the timing. Both are compared with a float64 computation (ours on a
float64 copy; tests/influence/test_exact.py proves it equal to a dense torch.func Hessian).

Each method runs in a subprocess of its own, so its peak memory (max RSS) is its own.

    python benchmarks/exact_vs_captum.py             # the full workload (Captum: ~15 min)
    python benchmarks/exact_vs_captum.py --n-train 300 --n-test 20   # a quick look
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch
from _common import rel_err, run_benchmark, save_result, trained_digits

from captum_layerinf import LayerInfluence

DAMPING = 1e-2


def run_method(method: str, n_train: int, n_test: int, out: Path) -> None:
    """Computes the scores `[n_layers, n_test, n_train]` with one method; saves them."""
    warnings.filterwarnings("ignore")
    model, train, test, _, acc = trained_digits(n_train, n_test)
    x, y = test.tensors
    if method == "float64":
        model, x = model.double(), x.double()
        train = torch.utils.data.TensorDataset(train.tensors[0].double(), train.tensors[1])
    start = time.perf_counter()
    if method == "captum":
        # LayerInfluence(hessian="captum") builds one NaiveInfluenceFunction per layer,
        # with projection_dim = layer size and hessian_reg = damping * n, and rescales by n.
        scores = LayerInfluence(model, train, hessian="captum", damping=DAMPING).influence((x, y))
    else:
        scores = LayerInfluence(model, train, damping=DAMPING).influence((x, y))
    save_result(out, method, scores, time.perf_counter() - start, accuracy=acc)


def main() -> None:
    ran = run_benchmark(__doc__, __file__, ("float64", "ours", "captum"), run_method)
    if ran is None:
        return
    args, results = ran
    ref = results["float64"]["scores"]
    print(
        f"\nDigits VGG-style CNN (6,562 parameters, test accuracy "
        f"{results['ours']['accuracy']:.1%}), {args.n_train} train x {args.n_test} test, "
        f"6 layers, damping {DAMPING}, float32 unless noted\n"
    )
    print("| method | seconds | peak RSS (MiB) | rel. error vs float64 |")
    print("|---|---:|---:|---:|")
    for method, label in [
        ("captum", "Captum NaiveInfluenceFunction, once per layer"),
        ("ours", 'captum-layerinf `hessian="exact"`'),
        ("float64", "captum-layerinf, float64 (reference)"),
    ]:
        r = results[method]
        err = rel_err(r["scores"], ref) if method != "float64" else 0.0
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_mib']:.0f} | {err:.1e} |")
    ratio = results["captum"]["seconds"] / results["ours"]["seconds"]
    diff = rel_err(results["ours"]["scores"], results["captum"]["scores"])
    print(
        f"\nspeed-up over Captum: {ratio:.1f}x; largest relative difference ours vs Captum: "
        f"{diff:.1e}"
    )


if __name__ == "__main__":
    main()
