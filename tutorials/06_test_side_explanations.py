# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 6: test-side explanations from the seed papers
#
# Contrastive LRP and layered explanations, next to layer-wise influence.
#
# Layer-wise influence explains a decision from the *training* side: which training images
# drove it, layer by layer. The seed papers also explain it from the *test* side, on the
# pixels of the test image. This tutorial runs those methods on small CNNs, on CPU, with
# generated data (nothing is downloaded).
#
# Part 1 explains a digit classifier with Ho's layered explanations; part 2 a shape
# classifier with contrastive LRP. With `CAPTUM_LAYERINF_TUTORIAL_SMALL=1` (the test run) the
# sizes shrink; the code is the same.

# %%
import os

import matplotlib.pyplot as plt
import torch

from captum_layerinf import LayerInfluence
from captum_layerinf.attr import (
    LayeredExplanation,
    layer_scores_from_influence,
    plot_layer_rankings,
    plot_layered_explanation,
)
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.models import DigitsVGG
from captum_layerinf.training import accuracy, train_classifier

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
N_TRAIN, EPOCHS = (300, 25) if SMALL else (1000, 30)
torch.manual_seed(0)
torch.set_num_threads(1)  # many tiny ops: one thread is faster on a busy machine

# %%
train, test = load_digits_split(n_train=N_TRAIN)
model = train_classifier(DigitsVGG(), train, epochs=EPOCHS)  # returned in eval mode
print(f"test accuracy: {accuracy(model, test):.3f}")
x_all, y_all = test.tensors
x, y = x_all[:4], y_all[:4]  # four test digits to explain

# %% [markdown]
# ## Layered explanations
#
# Ho's *layered explanations* answer "why this class?" in three steps:
#
# 1. give every unit of every hidden layer a numerical influence on the decision;
# 2. pick the layer whose units differ most in influence (here: the Gini coefficient of
#    the units' |influence|; 0 when all units are alike, near 1 when a few carry it);
# 3. take that layer's top-k units (by |influence|) and project each back to the pixels
#    with DeconvNet (Captum's `Deconvolution`, started from that unit alone).
#
# Ho's influence measure is MIM (Sliwinski, Strobel & Zick): for the layer's activations
# a(x), it sums α(‖a(x) − a(y)‖)·(a(x) − a(y)) over the reference points y that carry the
# other label, so a unit is influential when x differs in it from the nearby points of
# other classes. MIM is defined for two classes; `LayeredExplanation` applies it one class
# against the rest. It needs a labelled reference set: the training images, labelled by
# the model's own predictions.

# %%
le = LayeredExplanation(model, measure="mim", reference=train.tensors[0])
res = le.attribute(x, k=3)  # target: the predicted class of each digit
print("candidate layers:", res.layer_names)  # the output layer is left out (Ho)
for i in range(len(x)):
    print(
        f"digit {int(y[i])}: chosen layer {res.best_layer[i]}, "
        f"top units {res.unit_coordinates(i)}"  # (channel, row, column) in a conv layer
    )
print("projections:", tuple(res.projections.shape))  # [inputs, k, 1, 8, 8]

# %% [markdown]
# One row per digit: the input, the Gini coefficient per layer (the chosen layer in
# red), the DeconvNet image of each top unit (red: positive, blue: negative) and of the
# three together.

# %%
fig, rows = plt.subplots(2, 6, figsize=(12, 4.4))
for i in range(2):
    plot_layered_explanation(res, x, index=i, axes=rows[i])
fig.tight_layout()
plt.show()

# %% [markdown]
# The chosen layer is a choice of the statistic, not of the data alone. `layer=` forces
# one layer, as Ho's figure compares layers; and Captum's `InternalInfluence` and
# `LayerConductance` can replace MIM (they use the model's gradients, not a reference set).
# Gradient measures give zero to every unit that a following max-pool does not select,
# which by itself raises a layer's Gini coefficient: compare the rankings below.

# %%
for measure in ("mim", "internal_influence", "conductance"):
    reference = train.tensors[0] if measure == "mim" else None
    other = LayeredExplanation(model, measure=measure, reference=reference)
    r = other.attribute(x[:1], k=3)
    stats = ", ".join(
        f"{n} {s:.2f}" for n, s in zip(r.layer_names, r.layer_statistic[:, 0], strict=True)
    )
    print(f"{measure:>18}: {stats}  ->  {r.best_layer[0]}")

mid = le.attribute(x, k=3, layer="features.5")  # Ho's preferred "mid-network" layer
print("forced layer:", mid.best_layer[:2], tuple(mid.joint_projection.shape))

# %% [markdown]
# ### Training side next to test side
#
# `LayerInfluence` scores every (layer, test digit, training digit) triple. Summarised per
# layer by the mean |score| over the training set, it ranks the layers by how strongly the
# training data act on this test loss through them. The plot puts that ranking (left) next
# to the layered explanation's ranking (right), the same layer joined by a line; Spearman's
# ρ over the common layers is in the title. The output layer `classifier.2` has only a
# training-side rank.

# %%
li = LayerInfluence(model, train)  # exact per-layer Hessian blocks
train_side = layer_scores_from_influence(li.influence((x, y)), "mean_abs")  # [6, 4]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
for i, ax in enumerate(axes):
    plot_layer_rankings(
        dict(zip(li.layer_names, train_side[:, i].tolist(), strict=True)),
        dict(zip(res.layer_names, res.layer_statistic[:, i].tolist(), strict=True)),
        ax=ax,
        title=f"digit {int(y[i])}, predicted {int(res.target[i])}",
    )
fig.tight_layout()
plt.show()

# %%
import os

import matplotlib.pyplot as plt
import torch
from captum.attr import GuidedBackprop, Saliency
from torch import nn
from torch.utils.data import TensorDataset
from torchvision.ops import masks_to_boxes

from captum_layerinf.attr import (
    PAPER_VGG16_ABLATION,
    ContrastiveLRP,
    DeepTaylorLRP,
    RandomAttribution,
    box_masks,
    compare_attributions,
    format_comparison,
)
from captum_layerinf.training import accuracy, train_classifier

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
torch.set_num_threads(1)  # many small ops: one thread is fastest on a shared CPU

# %% [markdown]
# ## Contrastive LRP
#
# Set-up for contrastive LRP: images with a known object. Each 24 x 24 image has a noisy
# background, one bright shape of its class (square, disk, cross, triangle) at a random
# place, whose pixels we know exactly, and a class-independent blob elsewhere as clutter.

# %%
CLASSES = ("square", "disk", "cross", "triangle")


def stencil(kind, size=8):
    """Bool [size, size] pixels of one class's shape."""
    r = torch.arange(size)[:, None].float()
    c = torch.arange(size)[None, :].float()
    mid = (size - 1) / 2
    if kind == "square":
        return ~((r >= 2) & (r <= size - 3) & (c >= 2) & (c <= size - 3))
    if kind == "disk":
        return (r - mid) ** 2 + (c - mid) ** 2 <= (size / 2) ** 2
    if kind == "cross":
        return ((r - mid).abs() <= 1) | ((c - mid).abs() <= 1)
    return (c - mid).abs() <= r / 2 + 0.5  # triangle


def shapes(n, seed, objects=1, size=24, o=8):
    """Images [n, 1, size, size], classes [n, objects], masks [n, objects, size, size].

    With objects=2, the first object lies in the left half and the second, of another
    class, in the right half; with objects=1 a clutter blob takes the second place.
    """
    g = torch.Generator().manual_seed(seed)
    x = 0.4 * torch.rand(n, 1, size, size, generator=g)
    first = torch.randint(4, (n,), generator=g)
    labels = torch.stack([first, (first + torch.randint(1, 4, (n,), generator=g)) % 4], 1)
    masks = torch.zeros(n, 2, size, size, dtype=torch.bool)
    for i in range(n):
        for k, c_low in enumerate((0, size // 2)):
            r = int(torch.randint(size - o + 1, (), generator=g))
            c = c_low + int(torch.randint(size // 2 - o + 1, (), generator=g))
            if k < objects:
                masks[i, k, r : r + o, c : c + o] = stencil(CLASSES[labels[i, k]], o)
                x[i, 0][masks[i, k]] = 0.85
            else:  # clutter: random bright pixels
                blob = torch.rand(o // 2 + 1, o // 2 + 1, generator=g) < 0.6
                x[i, 0, r : r + o // 2 + 1, c : c + o // 2 + 1][blob] = 0.85
    if objects == 1:  # the object is not always on the left
        flip = torch.rand(n, generator=g) < 0.5
        x[flip], masks[flip] = x[flip].flip(-1), masks[flip].flip(-1)
    return x, labels[:, :objects], masks[:, :objects]


def shapes_cnn():
    """3 conv + 2 linear layers, with nn.Flatten (which plain Captum LRP rejects)."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, 4),
    )  # fmt: skip


# %%
torch.manual_seed(0)
train_x, train_y, _ = shapes(600 if SMALL else 2000, seed=0)
test_x, test_y, test_masks = shapes(100 if SMALL else 400, seed=1)
shapes_model = train_classifier(
    shapes_cnn(), TensorDataset(train_x, train_y[:, 0]), epochs=8 if SMALL else 15, lr=3e-3
)
print("test accuracy:", accuracy(shapes_model, TensorDataset(test_x, test_y[:, 0])))

# %% [markdown]
# ### LRP versus contrastive LRP
#
# Gu, Yang & Tresp (2018) observed that LRP's maps of one image barely change with the
# class they explain: the ReLU masks and max-pooling switches of the forward pass decide
# which pixels get relevance, whatever the class. Contrastive LRP (CLRP) explains the class
# *against* a dual "virtual" class and keeps only what is specific to it:
#
#     CLRP = max(0, R_class / sum R_class - R_dual / sum R_dual)
#
# with the dual being all other classes (CLRP1) or the class's own output neuron with its
# weights negated (CLRP2). `DeepTaylorLRP` is Captum's LRP with the paper's rules (z^B on
# the first layer for inputs in `input_bounds`, z+ elsewhere, winner-takes-all pooling, an
# identity rule for `nn.Flatten`, which plain Captum LRP rejects).
#
# The paper's Fig. 3 test: an image with two objects of different classes, explained once
# for each class.

# %%
BOUNDS = (0.0, 1.0)  # the images' value range, for the z^B rule
pair_x, pair_y, pair_masks = shapes(4, seed=11, objects=2)
explainers = {
    "LRP": DeepTaylorLRP(shapes_model, BOUNDS),
    "CLRP1": ContrastiveLRP(shapes_model, "clrp1", BOUNDS),
    "CLRP2": ContrastiveLRP(shapes_model, "clrp2", BOUNDS),
}
fig, axes = plt.subplots(4, 7, figsize=(14, 8.4))
for row in range(4):
    axes[row, 0].imshow(pair_x[row, 0], cmap="gray", vmin=0, vmax=1)
    axes[row, 0].set_title(" | ".join(CLASSES[k] for k in pair_y[row]), fontsize=9)
for col, (name, explainer) in enumerate(explainers.items()):
    for k in range(2):
        maps = explainer.attribute(pair_x, target=pair_y[:, k]).detach()[:, 0]
        for row in range(4):
            m = maps[row] / maps[row].sum()  # LRP maps carry the sign of the logit
            axes[row, 1 + 2 * col + k].imshow(
                m, cmap="seismic", vmin=-m.abs().max(), vmax=m.abs().max()
            )
            axes[row, 1 + 2 * col + k].set_title(f"{name}: {CLASSES[pair_y[row, k]]}", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# LRP lights up both objects for both classes; CLRP1 and CLRP2 put each class's relevance
# on its own object. CLRP shows what separates a class from the others *for this model*:
# where a weakly trained model has not learnt a shape (after the short training of the
# quick run, often the cross), its contrastive map spreads over the background instead.
# In numbers, over more such images: the correlation between the two classes' maps, and the
# share of each map's energy on its own object.

# %%
pair_x, pair_y, pair_masks = shapes(32 if SMALL else 200, seed=5, objects=2)


def correlation(a, b):
    """Pearson correlation of each pair of maps."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def own_share(maps, own, both):
    """Share of a map's positive energy on the two objects that lies on its own object."""
    maps = maps.clamp(min=0)
    return (maps * own).flatten(1).sum(1) / (maps * both).flatten(1).sum(1).clamp(min=1e-12)


for name, explainer in explainers.items():
    a, b = (
        (m / m.flatten(1).sum(1)[:, None, None, None]).detach()[:, 0]
        for m in (explainer.attribute(pair_x, target=pair_y[:, k]) for k in range(2))
    )
    both = pair_masks.any(1)
    own = torch.cat([own_share(a, pair_masks[:, 0], both), own_share(b, pair_masks[:, 1], both)])
    print(
        f"{name:6s} median correlation of the two maps {correlation(a, b).median():+.2f}, "
        f"median own-object share {own.median():.2f}"
    )

# %% [markdown]
# How the dual class is built on Captum: Captum's LRP starts from one output neuron and
# accepts no custom initial relevance, and it deletes the modules' rules after every call.
# `ContrastiveLRP` therefore swaps the final `nn.Linear`, for the duration of the call, for
# a head with the dual as an extra output (CLRP2: the layer with its negated rows appended;
# CLRP1: the layer plus a module whose rule hands the dual's relevance to the other
# classes), and attaches the rules afresh for each call. The model is left exactly as it was.
#
# ### Evaluating explanations: ablation and the pointing game
#
# The paper scores saliency methods two ways, generic over any Captum method here:
#
# - **ablation** (Table 1): replace a patch around the map's maximum with the mean image and
#   measure how much the true class's logit drops; a good map points at a pixel that matters;
# - **energy pointing game** (Fig. 4): keep the most relevant pixels until they hold a given
#   share of the map's energy; a hit when all kept pixels lie in the object's bounding box.

# %%
boxes = box_masks(masks_to_boxes(test_masks[:, 0]), 24, 24)
methods = {
    "Random": RandomAttribution(shapes_model),
    "Gradient": Saliency(shapes_model),
    "GuidedBackprop": GuidedBackprop(shapes_model),
    **explainers,
}
results = compare_attributions(methods, shapes_model, test_x, test_y[:, 0], boxes, patch_size=5)
print(format_comparison(results, "toy CNN", PAPER_VGG16_ABLATION))

# %%
fig, ax = plt.subplots(figsize=(6, 4))
for name, result in results.items():
    ax.plot([100 * e for e in result.energies], result.pointing_accuracy, marker="o", label=name)
ax.set_xlabel("kept energy (%)")
ax.set_ylabel("pointing accuracy")
ax.set_title("Energy pointing game (Gu et al. Fig. 4 on the toy CNN)")
ax.legend()
plt.show()

# %% [markdown]
# Reading the results. Every method ablates far better than random, and CLRP's maps, being
# zero wherever the contrast cancels, stay inside the box when most of the energy is kept,
# where gradient, guided backprop and LRP spill onto clutter and background. Which of guided
# backprop, LRP, CLRP1 and CLRP2 ablates best changes from one training seed to the next on
# this toy: the paper's ordering (guided backprop > CLRP2 > CLRP1 > gradient > LRP on VGG16)
# is not reproduced there. `benchmarks/clrp_evaluation.py` runs the full comparison over
# three seeds; its tables and the comparison with the paper are in
# docs/attributions.md ("Contrastive LRP").
