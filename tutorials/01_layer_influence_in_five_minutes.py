# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Layer-wise influence in five minutes
#
# Which training images made a CNN decide the way it did, and does the answer change from
# layer to layer? Influence functions (Koh & Liang 2017) answer the first question:
# they predict how the loss on a test image would change if one training image were
# removed and the model retrained. **Layer-wise** influence (Aamir, Tamosiunaite &
# Wörgötter 2023) answers the second: it restricts that prediction to the parameters of
# one layer at a time.
#
# For a layer `l` with parameters θ_l, training image z_j and test image ẑ_k:
#
#     s_l(j, k) = ∇_{θ_l} L(ẑ_k)ᵀ (H_l + λ I)⁻¹ ∇_{θ_l} L(z_j)
#
# with `H_l` the Hessian block of the **mean** training loss and `λ` the damping. A
# positive score marks a *proponent*: removing z_j is predicted to raise the test loss
# by `s_l(j, k) / n`. A negative score marks an *opponent*.
#
# In this tutorial we
#
# 1. train a small VGG-style CNN on scikit-learn's 8 x 8 digits (bundled, nothing is
#    downloaded),
# 2. find each layer's strongest proponents and opponents of a few test images and look
#    at them,
# 3. compare the **compound** influence (the sum over layers, the paper's Eq. 7) with the
#    **global** influence through all parameters and the full Hessian (Eq. 5),
# 4. check that our numbers agree with Captum's own `NaiveInfluenceFunction`.
#
# The whole notebook runs in a few minutes on a laptop CPU. Under the test suite it runs
# on fewer images (`CAPTUM_LAYERINF_TUTORIAL_SMALL=1`); the code path is the same.

# %%
import copy
import os
import tempfile
import time

import matplotlib.pyplot as plt
import torch
from captum.influence import NaiveInfluenceFunction
from scipy.stats import spearmanr
from torch import nn
from torch.utils.data import TensorDataset

from captum_layerinf import LayerInfluence
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.models import DigitsVGG
from captum_layerinf.training import accuracy, train_classifier

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
N_TRAIN = 100 if SMALL else 1000  # training images (of 1797 digits)
N_TEST = 4 if SMALL else 8  # test images explained
EPOCHS = 100 if SMALL else 40

# %% [markdown]
# ## 1. A small CNN on digits
#
# `DigitsVGG` is laid out like torchvision's VGG: `features` holds four 3 x 3
# convolutions with ReLU and two max-pools, `classifier` two linear layers. We use a
# narrow version (4 and 8 channels, 16 hidden units, 1,766 parameters) so that the
# *global* influence below, which needs the full 1,766 x 1,766 Hessian, stays cheap.
# `train_classifier` is a seeded Adam loop on the mean cross-entropy; it returns the
# model in eval mode.

# %%
torch.manual_seed(0)
train, test = load_digits_split(n_train=N_TRAIN, seed=0)
model = train_classifier(DigitsVGG(width=4, hidden=16), train, epochs=EPOCHS, lr=1e-2)
n_params = sum(p.numel() for p in model.parameters())
print(f"{n_params:,} parameters, {len(train)} training images")
print(f"test accuracy: {accuracy(model, test):.1%} on {len(test)} images")

# %% [markdown]
# Influence is proportional to the test image's loss gradient: an image the model already
# classifies with confidence has almost no loss to change, and its scores are tiny. So
# we explain the test images with the **highest loss** — the mistakes and near-mistakes,
# where the question "which training images did this?" matters.

# %%
x_all, y_all = test[:300]
with torch.no_grad():
    losses = nn.functional.cross_entropy(model(x_all), y_all, reduction="none")
hardest = losses.topk(N_TEST).indices
x_test, y_test = x_all[hardest], y_all[hardest]
pred = model(x_test).argmax(1)
print("labels:     ", y_test.tolist())
print("predictions:", pred.tolist())
print("losses:     ", [round(v, 2) for v in losses[hardest].tolist()])

# %% [markdown]
# ## 2. Layer-wise influence
#
# `LayerInfluence` is a Captum `DataInfluence`. By default it takes every module that
# owns trainable parameters, in forward order, and the `"exact"` curvature strategy: a
# dense damped Hessian block per layer (with `damping=1e-2`). `influence` returns one
# score per (layer, test image, training image).

# %%
li = LayerInfluence(model, train)
print(li.layer_names)

start = time.perf_counter()
scores = li.influence((x_test, y_test))
print(
    f"scores {tuple(scores.shape)} = [layers, test images, training images] "
    f"in {time.perf_counter() - start:.1f} s"
)

# %% [markdown]
# The loss in these scores is that of the test image's **true** label. A proponent
# (positive score) lowers it: it argues for the right answer. An opponent (negative
# score) raises it: for a misclassified image, the opponents are the training images
# that pulled the model towards its mistake.
#
# With `k=...`, `influence` returns Captum's `KMostInfluentialResults`: the indices and
# scores of the `k` strongest proponents (or, with `proponents=False`, opponents) per
# layer and test image, best first. They agree with sorting the full score tensor.

# %%
K = 5
top = li.influence((x_test, y_test), k=K)
bottom = li.influence((x_test, y_test), k=K, proponents=False)
print(top.indices.shape)  # [layers, test images, K]
assert torch.equal(top.indices, scores.topk(K, dim=-1).indices)
assert torch.equal(bottom.indices, scores.topk(K, dim=-1, largest=False).indices)

labels = train.tensors[1]
print(f"test image 0: label {int(y_test[0])}, predicted {int(pred[0])}")
print(f"{'layer':<13} {'labels of proponents':<22} labels of opponents")
for i, name in enumerate(li.layer_names):
    pro = labels[top.indices[i, 0]].tolist()
    con = labels[bottom.indices[i, 0]].tolist()
    print(f"{name:<13} {str(pro):<22} {con}")


# %% [markdown]
# Let us look at them. Each row is a layer; the first column is the test image (true
# label → prediction), the next ones its strongest proponents or opponents in that
# layer, with their index, label and score.


# %%
def show_top(results, test_index: int, title: str):
    """Test image `test_index` and its top-k training images in every layer."""
    n_layers, k = len(li.layer_names), results.indices.shape[-1]
    fig, axes = plt.subplots(n_layers, k + 1, figsize=(1.3 * (k + 1), 1.45 * n_layers))
    for i, name in enumerate(li.layer_names):
        axes[i, 0].imshow(x_test[test_index, 0], cmap="gray_r")
        axes[i, 0].set_ylabel(name, fontsize=8)
        axes[i, 0].set_title(
            f"test: {int(y_test[test_index])} → {int(pred[test_index])}", fontsize=8
        )
        for c in range(k):
            j = int(results.indices[i, test_index, c])
            axes[i, c + 1].imshow(train.tensors[0][j, 0], cmap="gray_r")
            score = float(results.influence_scores[i, test_index, c])
            axes[i, c + 1].set_title(f"#{j} ({int(labels[j])}) {score:.2g}", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, axes


fig, _ = show_top(top, 0, "strongest proponents per layer")
plt.show()
fig, _ = show_top(bottom, 0, "strongest opponents per layer")
plt.show()

# %% [markdown]
# The layers do not agree on who matters. The early convolutions see strokes and
# where the ink is, the last layers see the class evidence the network has built, and
# an image can be a strong proponent in one layer and nearly irrelevant in another.
# How strongly do the layers' rankings agree? The rank correlation of their scores over
# the training set, averaged over the test images:


# %%
n_layers = len(li.layer_names)
agreement = torch.zeros(n_layers, n_layers)
for a in range(n_layers):
    for b in range(n_layers):
        agreement[a, b] = (
            sum(spearmanr(scores[a, k], scores[b, k])[0] for k in range(N_TEST)) / N_TEST
        )

fig, ax = plt.subplots(figsize=(4.4, 3.8))
im = ax.imshow(agreement, vmin=-1, vmax=1, cmap="RdBu_r")
ax.set_xticks(range(n_layers), li.layer_names, rotation=60, fontsize=8)
ax.set_yticks(range(n_layers), li.layer_names, fontsize=8)
fig.colorbar(im, ax=ax, label="Spearman")
ax.set_title("agreement of layers' influence scores", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Compound versus global influence
#
# The **compound** influence adds the layers' scores (Eq. 7): each layer uses only its
# own Hessian block, so it is a *block-diagonal* approximation of the **global**
# influence, which inverts the full Hessian of all 1,766 parameters (Eq. 5). Both are
# `[n_test, n_train]`.

# %%
compound = li.compound_influence((x_test, y_test))
assert torch.allclose(compound, scores.sum(0), rtol=1e-4, atol=1e-6)

start = time.perf_counter()
global_scores = li.global_influence((x_test, y_test))
print(f"global influence {tuple(global_scores.shape)} in {time.perf_counter() - start:.1f} s")

for k in range(N_TEST):
    overlap = len(
        set(compound[k].topk(10).indices.tolist()) & set(global_scores[k].topk(10).indices.tolist())
    )
    print(
        f"test image {k}: Spearman {spearmanr(compound[k], global_scores[k])[0]:+.2f}, "
        f"top-10 proponents shared: {overlap}/10"
    )

# %%
n_show = min(N_TEST, 4)
fig, axes = plt.subplots(1, n_show, figsize=(3 * n_show, 2.9))
for k, ax in enumerate(axes):
    ax.scatter(global_scores[k], compound[k], s=6, alpha=0.6)
    ax.axhline(0, color="gray", lw=0.5)
    ax.axvline(0, color="gray", lw=0.5)
    ax.set_xlabel("global (Eq. 5)")
    ax.ticklabel_format(style="sci", scilimits=(-2, 3))
    ax.locator_params(nbins=4)
    ax.set_title(f"test image {k} (label {int(y_test[k])})", fontsize=9)
axes[0].set_ylabel("compound (Eq. 7)")
fig.tight_layout()
plt.show()

# %% [markdown]
# The two need not agree. At the optimum of a non-convex network the full Hessian is
# indefinite, and with a small damping its inverse is dominated by near-zero and
# negative eigenvalues (Basu et al. 2021). Each layer's block, in contrast, is positive
# semi-definite for a ReLU network like this one: the logits are piecewise linear in one
# layer's parameters, so the block equals its Gauss–Newton matrix. On this kind of CNN,
# the compound score also predicts actual leave-one-out retraining much better than the
# global one (`benchmarks/fidelity.py`, `docs/fidelity.md`: on a small digits CNN with
# damping = weight decay, leave-one-out Pearson 0.69 against 0.27 on a common pool of
# removals).
#
# ## 4. Agreement with Captum
#
# Captum ships influence functions too: `captum.influence.NaiveInfluenceFunction`
# computes the exact Hessian, and its `layers=[...]` argument restricts both the
# gradients and the Hessian to the named layers, so one instance per layer computes
# layer-wise influence. Its convention differs from ours in one place: its Hessian is
# that of the **summed** training loss, `n` times ours. With `hessian_reg = λ·n` its
# damped Hessian is `n (H_l + λ I)`, so its scores **times n** are ours.
#
# Captum computes and inverts its Hessian in the model's dtype, which in float32 leaves
# differences of about 1e-3 (relative). To see the agreement beyond round-off we compare
# on a float64 copy of the model and the data. Captum loads the model from a checkpoint
# file, so we save one first.

# %%
model64 = copy.deepcopy(model).double()
train64 = TensorDataset(train.tensors[0].double(), train.tensors[1])
x64 = x_test.double()
li64 = LayerInfluence(model64, train64)
ours64 = li64.influence((x64, y_test))

layer = "classifier.2"
i = li64.layer_names.index(layer)
n = len(train64)
with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, "model.pt")
    torch.save(model64.state_dict(), path)
    captum_if = NaiveInfluenceFunction(
        model64,
        train64,
        path,
        layers=[layer],
        loss_fn=nn.CrossEntropyLoss(reduction="none"),
        batch_size=64,
        projection_dim=sum(p.numel() for p in model64.get_submodule(layer).parameters()),
        hessian_reg=li64.damping * n,
    )
    theirs = captum_if.influence((x64, y_test)) * n


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


print(f"{layer}: max |Captum·n − ours| / max |ours| = {rel_diff(theirs, ours64[i]):.1e}")
assert rel_diff(theirs, ours64[i]) < 1e-6

# %% [markdown]
# `projection_dim` equal to the layer's size keeps all of Captum's eigenpairs, so nothing
# is truncated.
#
# `hessian="captum"` does exactly this for every layer, behind the same interface as
# every other strategy, so the two can be compared layer by layer. Here on the float32
# model, where the differences are Captum's float32 round-off:

# %%
start = time.perf_counter()
via_captum = LayerInfluence(model, train, hessian="captum").influence((x_test, y_test))
print(f"hessian='captum' in {time.perf_counter() - start:.1f} s")
for i, name in enumerate(li.layer_names):
    print(f"{name:<13} relative difference {rel_diff(via_captum[i], scores[i]):.1e}")
    assert rel_diff(via_captum[i], scores[i]) < 5e-2

# %% [markdown]
# ## Where next
#
# - Other test images: `show_top(top, 1, "proponents")`.
# - The training images that influence themselves most, often ambiguous or mislabelled
#   ones: `li.self_influence()`, `Tensor [n_layers, n_train]`.
# - Larger models: `hessian="ekfac"` or `"cg"` instead of `"exact"`, and
#   `LayerInfluence.check` to measure how close an approximation is — see tutorial 5,
#   *Choosing a curvature strategy*.
# - What a decision rests on — object, texture or style: tutorial 2, *Disturbances and
#   texture bias*.
