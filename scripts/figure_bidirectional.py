"""Bidirectional explanations on the digits CNN: SHAP maps next to layer-wise influential images.

Trains `DigitsVGG` on 1500 of scikit-learn's digits (offline, CPU), computes layer-wise
influence (`hessian="exact"`) and SHAP values for a few test digits, and writes

- `runs/figures/bidirectional.png`: a correctly classified digit, with the top-k
  proponents and opponents of the compound score and of three layers, and the SHAP maps
  of those training images for their own class;
- `runs/figures/bidirectional_misclassified.png`: a misclassified test digit (SHAP maps
  for the predicted and the true class);
- `runs/figures/bidirectional.pt`: the `BidirectionalResult` (load it with
  `BidirectionalResult.load`).

    python scripts/figure_bidirectional.py [--shap gradient|deep|partition] [--out runs/figures]
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
from captum_layerinf.datasets import load_digits_split  # noqa: E402
from captum_layerinf.models import DigitsVGG  # noqa: E402
from captum_layerinf.shapley import BidirectionalExplainer, plot_bidirectional  # noqa: E402
from captum_layerinf.training import accuracy, train_classifier  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shap", default="gradient", help="gradient, deep or partition")
    parser.add_argument("--n-test", type=int, default=24, help="test digits explained")
    parser.add_argument("--k", type=int, default=3, help="proponents / opponents per row")
    parser.add_argument("--out", type=Path, default=Path("runs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    start = time.perf_counter()
    train, test = load_digits_split(1500, seed=0)
    model = train_classifier(DigitsVGG(), train, epochs=30)
    seconds = time.perf_counter() - start
    print(f"trained in {seconds:.1f} s; test accuracy {accuracy(model, test):.3f}")
    # the first test digits, with the first two misclassified ones among them
    x_all, y_all = test[:]
    with torch.no_grad():
        wrong = (model(x_all).argmax(1) != y_all).nonzero().flatten()[:2]
    keep = torch.arange(len(y_all))
    keep = torch.cat([keep[~torch.isin(keep, wrong)][: args.n_test - len(wrong)], wrong])

    start = time.perf_counter()
    li = LayerInfluence(model, train)
    names = [str(c) for c in range(10)]
    explainer = BidirectionalExplainer(model, li, args.shap, class_names=names)
    x, y = x_all[keep], y_all[keep]
    result = explainer.explain((x, y), k=args.k, masks=x[:, 0] > 0, explain_train=True)
    print(f"explained {len(y)} digits in {time.perf_counter() - start:.1f} s ({args.shap})")
    result.save(args.out / "bidirectional.pt")

    print("test | true | pred | fg share | spread | area80 | layer agr. | pred agr.")
    for i in range(len(result)):
        print(
            f"{i:4d} | {int(result.labels[i]):4d} | {int(result.predictions[i]):4d} | "
            f"{result.foreground_share[i]:8.2f} | {result.positive_spread[i]:6.2f} | "
            f"{result.positive_area[i]:6.2f} | {result.layer_agreement[i]:10.2f} | "
            f"{result.prediction_agreement[i]:9.2f}"
        )

    correct = (result.predictions == result.labels).nonzero().flatten()
    fig, _ = plot_bidirectional(result, int(correct[0]), opponents=True, train_shap=True)
    fig.savefig(args.out / "bidirectional.png", dpi=130)
    plt.close(fig)
    written = [args.out / "bidirectional.png"]
    wrong = (result.predictions != result.labels).nonzero().flatten()
    if len(wrong):
        fig, _ = plot_bidirectional(result, int(wrong[0]), opponents=True)
        fig.savefig(args.out / "bidirectional_misclassified.png", dpi=130)
        plt.close(fig)
        written.append(args.out / "bidirectional_misclassified.png")
    print("wrote", ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
