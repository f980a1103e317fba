"""Gu et al. (2018)'s evaluation of saliency methods on a toy CNN: ablation and pointing game.

Trains the shapes CNN (3 conv + 2 linear, `nn.Sequential` with `nn.Flatten`) on generated
24 x 24 images with one class-specific shape and a class-independent distractor blob each,
then scores Random, Gradient (Captum `Saliency`), `GuidedBackprop`, LRP (the paper's rules,
`DeepTaylorLRP`), CLRP1 and CLRP2 with

- the ablation score (paper Table 1): mean drop of the true class's logit after replacing a
  patch around the map's maximum by the mean image;
- the energy-thresholded pointing game (paper Fig. 4) against the shape's bounding box;
- class-discriminativeness (paper Fig. 3) on images with two shapes of different classes:
  the correlation of the maps for the two classes and the share of each map's energy that
  lies on its own object;
- where each map's maximum falls (inside the box, on the clutter), per class.

Repeated over `--seeds` trainings (model initialisation and data shuffling); tables show the
mean over seeds. One thread; about a minute per seed.

    python benchmarks/clrp_evaluation.py [--seeds 3] [--figure runs/figures/clrp_maps.png]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from captum.attr import GuidedBackprop, Saliency
from torch.utils.data import TensorDataset
from torchvision.ops import masks_to_boxes

from captum_layerinf.attr import (
    PAPER_VGG16_ABLATION,
    AttributionEvaluation,
    ContrastiveLRP,
    DeepTaylorLRP,
    RandomAttribution,
    attribution_heatmap,
    box_masks,
    compare_attributions,
    format_comparison,
)
from captum_layerinf.training import accuracy, train_classifier

# The toy generator lives with the tests until the embedded object data set replaces it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.attr._shapes import CLASSES, make_pairs, make_shapes, shapes_cnn  # noqa: E402

BOUNDS = (0.0, 1.0)
N_TRAIN, N_TEST, N_PAIRS, EPOCHS, PATCH = 2000, 500, 200, 15, 5
NAMES = ["Random", "Gradient", "GuidedBackprop", "LRP", "CLRP1", "CLRP2"]


def methods(model):
    return {
        "Random": RandomAttribution(model, seed=0),
        "Gradient": Saliency(model),
        "GuidedBackprop": GuidedBackprop(model),
        "LRP": DeepTaylorLRP(model, BOUNDS),
        "CLRP1": ContrastiveLRP(model, "clrp1", BOUNDS),
        "CLRP2": ContrastiveLRP(model, "clrp2", BOUNDS),
    }


def _normalised_heat(maps, name):
    """Maps divided by their total: signed for LRP (whose maps carry the sign of the logit)."""
    heat = attribution_heatmap(maps.detach())
    total = (heat if name == "LRP" else heat.abs()).flatten(1).sum(1).reshape(-1, 1, 1)
    return heat / torch.where(total == 0, torch.ones_like(total), total)


def discriminativeness(model, seed):
    """Median correlation of the two classes' maps and median own-object energy share."""
    images, class_a, class_b, mask_a, mask_b = make_pairs(N_PAIRS, seed=seed)
    out = {}
    for name, method in methods(model).items():
        a = _normalised_heat(method.attribute(images, target=class_a), name)
        b = _normalised_heat(method.attribute(images, target=class_b), name)
        fa, fb = a.flatten(1), b.flatten(1)
        fa, fb = fa - fa.mean(1, keepdim=True), fb - fb.mean(1, keepdim=True)
        corr = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp(min=1e-30)

        def share(m, own, other):
            m = m.clamp(min=0)
            on_own, on_other = (m * own).flatten(1).sum(1), (m * other).flatten(1).sum(1)
            return on_own / (on_own + on_other).clamp(min=1e-30)

        shares = torch.cat([share(a, mask_a, mask_b), share(b, mask_b, mask_a)])
        out[name] = (float(corr.median()), float(shares.median()))
    return out


def run_seed(seed):
    torch.manual_seed(seed)
    images, labels, _ = make_shapes(N_TRAIN, seed=0)
    start = time.perf_counter()
    model = train_classifier(
        shapes_cnn(), TensorDataset(images, labels), epochs=EPOCHS, lr=3e-3, seed=seed
    )
    train_s = time.perf_counter() - start
    x, y, masks = make_shapes(N_TEST, seed=1)
    boxes = box_masks(masks_to_boxes(masks), x.shape[-2], x.shape[-1])
    acc = accuracy(model, TensorDataset(x, y))
    start = time.perf_counter()
    results = compare_attributions(methods(model), model, x, y, boxes, patch_size=PATCH)
    eval_s = time.perf_counter() - start
    print(
        f"seed {seed}: trained in {train_s:.0f} s, test accuracy {acc:.3f}, "
        f"evaluated in {eval_s:.0f} s",
        flush=True,
    )
    return model, results, discriminativeness(model, seed=5), acc, maxima(model, x, y, masks)


def maxima(model, x, y, masks):
    """Per method and class: share of map maxima inside the box and on the clutter blob.

    The classic pointing game (one pixel), i.e. the point the ablation removes. Clutter:
    the distractor's bright pixels (background noise stays below 0.4) and a 1-pixel rim.
    """
    boxes = box_masks(masks_to_boxes(masks), x.shape[-2], x.shape[-1]).flatten(1)
    bright = ((x[:, 0] > 0.45) & ~masks)[:, None].float()
    clutter = (torch.nn.functional.max_pool2d(bright, 3, 1, 1)[:, 0] > 0).flatten(1)
    out = {}
    for name, method in methods(model).items():
        if name == "Random":
            continue
        heat = attribution_heatmap(method.attribute(x, target=y).detach())
        top = heat.flatten(1).argmax(1, keepdim=True)
        in_box, on_clutter = boxes.gather(1, top)[:, 0], clutter.gather(1, top)[:, 0]
        out[name] = [
            (float(in_box[y == c].float().mean()), float(on_clutter[y == c].float().mean()))
            for c in range(len(CLASSES))
        ]
    return out


def figure(model, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, class_a, class_b, *_ = make_pairs(4, seed=11)
    shown = ["GuidedBackprop", "LRP", "CLRP1", "CLRP2"]
    fig, axes = plt.subplots(4, 1 + 2 * len(shown), figsize=(2 * (1 + 2 * len(shown)), 8.4))
    all_methods = methods(model)
    for col, name in enumerate(shown):
        for k, target in enumerate((class_a, class_b)):
            heat = _normalised_heat(all_methods[name].attribute(images, target=target), name)
            for row in range(4):
                ax = axes[row, 1 + 2 * col + k]
                vmax = float(heat[row].abs().max())
                ax.imshow(heat[row], cmap="seismic", vmin=-vmax, vmax=vmax)
                ax.set_title(f"{name}: {CLASSES[target[row]]}", fontsize=8)
    for row in range(4):
        axes[row, 0].imshow(images[row, 0], cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(f"{CLASSES[class_a[row]]} | {CLASSES[class_b[row]]}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--figure", default="runs/figures/clrp_maps.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require")
    warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")

    runs = [run_seed(seed) for seed in range(args.seeds)]
    pooled = {}  # every seed's images in one evaluation, for the pointing-game table
    for name in NAMES:
        per_seed = [r[1][name] for r in runs]
        pooled[name] = AttributionEvaluation(
            per_seed[0].energies,
            torch.cat([r.hits for r in per_seed], 1),
            torch.cat([r.drops for r in per_seed]),
        )
    print(
        f"\n{N_TEST} test images x {args.seeds} seeds; accuracy "
        + ", ".join(f"{r[3]:.3f}" for r in runs)
        + f"; ablation patch {PATCH} x {PATCH} of "
        "24 x 24; pointing game against bounding boxes, all kept pixels inside.\n"
    )
    print("Ablation (paper Table 1: mean drop of the true class's logit), one row per network:\n")
    print("| | " + " | ".join(NAMES) + " |\n|---|" + "---:|" * len(NAMES))
    for seed, run in enumerate(runs):
        cells = [f"{run[1][n].ablation_score:.3f}" for n in NAMES]
        print(f"| toy CNN, seed {seed} | " + " | ".join(cells) + " |")
    ranks = torch.zeros(len(NAMES))
    for run in runs:
        scores = torch.tensor([run[1][n].ablation_score for n in NAMES])
        ranks += scores.argsort(descending=True).argsort().float() + 1
    print(
        "| toy CNN, mean rank (1 = largest drop) | "
        + " | ".join(f"{r:.1f}" for r in ranks / len(runs))
        + " |"
    )
    print("| VGG16 (paper) | " + " | ".join(f"{PAPER_VGG16_ABLATION[n]:.4f}" for n in NAMES) + " |")
    paper_rank = torch.tensor([PAPER_VGG16_ABLATION[n] for n in NAMES]).argsort(descending=True)
    print(
        "| VGG16 (paper), rank | "
        + " | ".join(str(int(r) + 1) for r in paper_rank.argsort())
        + " |\n"
    )
    print("Pointing game (paper Fig. 4 as numbers), all seeds pooled:\n")
    print(format_comparison(pooled).split("\n\n", 1)[1])
    print(
        "class-discriminativeness on two-object images (median over "
        f"{N_PAIRS} images, mean over seeds):\n"
    )
    print("| | " + " | ".join(NAMES) + " |\n|---|" + "---:|" * len(NAMES))
    for i, label in enumerate(("correlation of the two classes' maps", "own-object share")):
        cells = [sum(r[2][n][i] for r in runs) / len(runs) for n in NAMES]
        print(f"| {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    print(
        "\nWhere each map's maximum falls, per class of the test images: share inside the "
        "box / on the clutter blob:\n"
    )
    print("| seed | method | " + " | ".join(CLASSES) + " |\n|---|---|" + "---:|" * len(CLASSES))
    for seed, run in enumerate(runs):
        for name, per_class in run[4].items():
            cells = [f"{b:.2f} / {c:.2f}" for b, c in per_class]
            print(f"| {seed} | {name} | " + " | ".join(cells) + " |")
    if args.figure:
        figure(runs[0][0], args.figure)


if __name__ == "__main__":
    main()
