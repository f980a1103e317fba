"""Layer-wise TracIn: ours versus Captum's TracInCP run once per layer.

Workload: the digits CNN of exact_vs_captum.py (6,562 parameters), trained 40 epochs with
a checkpoint every 8 epochs (5 checkpoints, η = the Adam learning rate for each),
1500 train x 100 test, all 6 layers, constructors inside the timing, each method in its
own process. Captum runs in its fastest mode (`sample_wise_grads_per_batch=True`, summed
loss, batch 64).

    python benchmarks/tracin_vs_captum.py
"""

from __future__ import annotations

import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import LR, rel_err, run_benchmark, save_result, trained_digits
from captum.influence import TracInCP
from torch import nn

from captum_layerinf import LayerInfluence


def run_method(method: str, n_train: int, n_test: int, out: Path) -> None:
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as folder:
        model, train, test, paths, acc = trained_digits(n_train, n_test, checkpoint_dir=folder)
        rates = [LR] * len(paths)
        start = time.perf_counter()
        if method == "ours":
            li = LayerInfluence(
                model, train, hessian="tracin", checkpoints=paths, learning_rates=rates
            )
            scores = li.influence(test.tensors)
        else:

            def load(m, path):
                m.load_state_dict(torch.load(path, weights_only=True))
                return LR

            layers = LayerInfluence(model, train).layer_names
            scores = torch.stack(
                [
                    TracInCP(
                        model,
                        train,
                        checkpoints=paths,
                        checkpoints_load_func=load,
                        layers=[layer],
                        loss_fn=nn.CrossEntropyLoss(reduction="sum"),
                        batch_size=64,
                        sample_wise_grads_per_batch=True,
                    ).influence(test.tensors)
                    for layer in layers
                ]
            )
        save_result(out, method, scores, time.perf_counter() - start, accuracy=acc)


def main() -> None:
    ran = run_benchmark(__doc__, __file__, ("ours", "captum"), run_method)
    if ran is None:
        return
    args, results = ran
    print(
        f"\nLayer-wise TracIn, digits CNN (test accuracy {results['ours']['accuracy']:.1%}), "
        f"{args.n_train} train x {args.n_test} test, 6 layers, 5 checkpoints\n"
    )
    print("| method | seconds | peak RSS (MiB) |")
    print("|---|---:|---:|")
    for method, label in [
        ("captum", "Captum TracInCP, once per layer"),
        ("ours", 'captum-layerinf `hessian="tracin"`'),
    ]:
        r = results[method]
        print(f"| {label} | {r['seconds']:.1f} | {r['peak_mib']:.0f} |")
    ratio = results["captum"]["seconds"] / results["ours"]["seconds"]
    diff = rel_err(results["ours"]["scores"], results["captum"]["scores"])
    print(f"\nspeed-up over Captum: {ratio:.1f}x; largest relative difference: {diff:.1e}")


if __name__ == "__main__":
    main()
