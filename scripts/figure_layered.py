"""Layered explanations (Ho) of the digits CNN, paired with layer-wise training influence.

Writes `runs/figures/layered.png` (offline, CPU): for a few test digits, one row each:
the input; the layer-selection statistic (Gini coefficient of |MIM| over each layer's
units); the DeconvNet images of the top-k MIM units of the chosen layer, one by one and
together; the top-k units of every candidate layer together (as Ho's Fig. 2 compares
layers; the chosen one framed); and the layer ranking from training-side layer-wise
influence (mean |score| over the training set, `LayerInfluence`, exact Hessian blocks)
next to the test-side one.

    python scripts/figure_layered.py [--n-train 1000] [--epochs 30] [--k 3] [--out runs/figures]
        [--measure mim | internal_influence | conductance]   (others: layered_<measure>.png)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from captum_layerinf import LayerInfluence  # noqa: E402
from captum_layerinf.attr import (  # noqa: E402
    LayeredExplanation,
    layer_scores_from_influence,
    plot_layer_rankings,
    plot_layered_explanation,
)
from captum_layerinf.datasets import load_digits_split  # noqa: E402
from captum_layerinf.models import DigitsVGG  # noqa: E402
from captum_layerinf.training import accuracy, train_classifier  # noqa: E402


def _ranks(values: torch.Tensor) -> torch.Tensor:
    return values.argsort(descending=True).argsort().double()


SHORT = {"mim": "MIM", "internal_influence": "int. infl.", "conductance": "conductance"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--k", type=int, default=3, help="top units per input")
    parser.add_argument("--digits", type=int, nargs="+", default=[0, 3, 7], help="classes shown")
    parser.add_argument(
        "--measure", default="mim", choices=["mim", "internal_influence", "conductance"]
    )
    parser.add_argument("--out", type=Path, default=Path("runs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    start = time.perf_counter()

    train, test = load_digits_split(n_train=args.n_train)
    model = train_classifier(DigitsVGG(), train, epochs=args.epochs)
    print(f"test accuracy {accuracy(model, test):.3f} ({time.perf_counter() - start:.1f} s)")

    x_all, y_all = test.tensors
    pred = model(x_all).argmax(1)
    picks = [int(((y_all == d) & (pred == d)).nonzero()[0]) for d in args.digits]
    x, y = x_all[picks], y_all[picks]

    reference = train.tensors[0] if args.measure == "mim" else None
    le = LayeredExplanation(model, measure=args.measure, reference=reference)
    res = le.attribute(x, k=args.k)
    li = LayerInfluence(model, train)  # exact blocks, damping 1e-2
    train_side = layer_scores_from_influence(li.influence((x, y)), "mean_abs")
    per_layer = {name: le.attribute(x, k=args.k, layer=name) for name in res.layer_names}
    print(f"explanations and influence done ({time.perf_counter() - start:.1f} s)")

    n_layers = len(res.layer_names)
    n_cols = args.k + 4 + n_layers
    fig = plt.figure(figsize=(1.75 * n_cols + 3.5, 2.6 * len(picks)))
    ratios = [1, 1.3] + [1] * (n_cols - 3) + [3.0]
    grid = fig.add_gridspec(len(picks), n_cols, width_ratios=ratios)
    for row in range(len(picks)):
        axes = [fig.add_subplot(grid[row, j]) for j in range(n_cols)]
        plot_layered_explanation(res, x, index=row, axes=axes[: args.k + 3])
        for ax, name in zip(axes[args.k + 3 : -1], res.layer_names, strict=True):
            joint = per_layer[name].joint_projection[row, 0]
            lim = float(joint.abs().max()) or 1.0
            ax.imshow(joint.numpy(), cmap="seismic", vmin=-lim, vmax=lim)
            ax.set_title(f"{name}\ntop-{args.k}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if name == res.best_layer[row]:
                for spine in ax.spines.values():
                    spine.set(color="tab:red", linewidth=2.5)
        plot_layer_rankings(
            dict(zip(li.layer_names, train_side[:, row].tolist(), strict=True)),
            dict(zip(res.layer_names, res.layer_statistic[:, row].tolist(), strict=True)),
            ax=axes[-1],
            train_label="train side\nmean |s_l|",
            test_label=f"test side\nGini |{SHORT[args.measure]}|",
        )
        print(
            f"digit {int(y[row])}: best layer {res.best_layer[row]}, units "
            f"{res.unit_coordinates(row)}, test ranking {res.layer_ranking(row)}"
        )
        stats = res.layer_statistic[:, row].tolist()
        print(
            "  test side:",
            ", ".join(f"{n} {v:.3f}" for n, v in zip(res.layer_names, stats, strict=True)),
        )
        common = res.layer_names
        rank_train = train_side[[li.layer_names.index(n) for n in common], row]
        rho = torch.corrcoef(
            torch.stack([_ranks(rank_train), _ranks(res.layer_statistic[:, row])])
        )[0, 1]
        print(f"  Spearman rho over {len(common)} layers: {rho:.2f}")
    fig.suptitle(
        f"Layered explanations (Ho) of the digits CNN: {SHORT[args.measure]}"
        + (f" over the {args.n_train} training digits, " if args.measure == "mim" else ", ")
        + f"top-{args.k} units of the most unequal layer, DeconvNet images; then the top-{args.k} "
        "of every layer; right: layer rankings, training side vs test side",
        fontsize=10,
    )
    fig.tight_layout()
    path = args.out / ("layered.png" if args.measure == "mim" else f"layered_{args.measure}.png")
    fig.savefig(path, dpi=110)
    print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
