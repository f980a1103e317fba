# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.16.0
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tutorial 6: test-side explanations
#
# Layer-wise influence explains a decision from the training side: which training images
# acted on it, through which layer. This tutorial explains decisions from the test side,
# inside the network, with the attribution methods of the seed papers in
# `captum_layerinf.attr`, and puts the two sides next to each other.
#
# Set-up: the small VGG-style CNN on scikit-learn's 8x8 digits (offline). With
# `CAPTUM_LAYERINF_TUTORIAL_SMALL=1` (the test run) the sizes shrink; the code is the same.

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
    stats = ", ".join(f"{n} {s:.2f}" for n, s in zip(r.layer_names, r.layer_statistic[:, 0]))
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
        dict(zip(li.layer_names, train_side[:, i].tolist())),
        dict(zip(res.layer_names, res.layer_statistic[:, i].tolist())),
        ax=ax,
        title=f"digit {int(y[i])}, predicted {int(res.target[i])}",
    )
fig.tight_layout()
plt.show()
