"""The small end-to-end example run by `make demo`: layer-wise influence on digits."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .datasets import load_digits_split
from .influence import LayerInfluence
from .models import DigitsVGG
from .training import accuracy, train_classifier


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the digits demo.

    Attributes:
        n_train: Training images (of scikit-learn's 1797 digits).
        n_images: Test images explained.
        epochs: Training epochs.
        top: Size of the compound top list.
        seed: Seed of the split, the initialisation and the shuffling.
        show_progress: Show progress bars.
    """

    n_train: int = 1500
    n_images: int = 4
    epochs: int = 40
    top: int = 5
    seed: int = 0
    show_progress: bool = True


def run_demo(config: DemoConfig = DemoConfig()) -> dict:
    """Trains the digits CNN, computes layer-wise influence, prints the most influential.

    Returns:
        A dict with the model's test accuracy, the layer names, the per-layer top-1 and
        the compound top-k indices, `[n_layers, n_images]` and `[n_images, top]`.
    """
    torch.manual_seed(config.seed)
    train, test = load_digits_split(config.n_train, seed=config.seed)
    model = DigitsVGG()
    start = time.perf_counter()
    train_classifier(model, train, epochs=config.epochs, seed=config.seed)
    acc = accuracy(model, test)
    print(
        f"Trained a VGG-style CNN ({sum(p.numel() for p in model.parameters()):,} parameters) "
        f"on {len(train)} digits in {time.perf_counter() - start:.1f} s: "
        f"test accuracy {acc:.1%} on {len(test)} images."
    )
    x, y = test[: config.n_images]
    start = time.perf_counter()
    li = LayerInfluence(model, train)
    top1 = li.influence((x, y), k=1, show_progress=config.show_progress)
    compound = li.compound_influence((x, y), k=config.top)
    print(
        f"Layer-wise influence (exact, damping {li.damping}) of {len(train)} training images "
        f"on {len(y)} test images, {len(li.layer_names)} layers: "
        f"{time.perf_counter() - start:.1f} s.\n"
    )
    labels = train.tensors[1]
    pred = model(x).argmax(1)
    width = max(len(n) for n in li.layer_names)
    for k in range(len(y)):
        print(f"Test image {k}: label {int(y[k])}, predicted {int(pred[k])}")
        for i, name in enumerate(li.layer_names):
            j = int(top1.indices[i, k, 0])
            score = float(top1.influence_scores[i, k, 0])
            print(
                f"  {name:<{width}}  most influential: train #{j:<5} label {int(labels[j])}"
                f"  score {score:+.3e}"
            )
        items = ", ".join(f"#{int(j)} ({int(labels[j])})" for j in compound.indices[k])
        print(f"  compound top-{config.top}: {items}\n")
    return {
        "accuracy": acc,
        "layers": li.layer_names,
        "top1": top1.indices[:, :, 0],
        "compound": compound.indices,
    }
