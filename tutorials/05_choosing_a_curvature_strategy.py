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
# # Choosing a curvature strategy
#
# Layer-wise influence needs `(H_l + λ I)⁻¹ v` for every layer `l`: the inverse of the
# layer's damped Hessian block applied to test gradients. `LayerInfluence(hessian=...)`
# offers several ways to get it, from exact to cheap:
#
# | `hessian=` | what it does | cost grows with |
# |---|---|---|
# | `"exact"` | dense block per layer, factorised once | P² memory, P³ time per layer |
# | `"cg"` | conjugate gradient, exact Hessian-vector products | iterations × passes over the data |
# | `"lissa"` | Koh & Liang's stochastic Neumann series | depth ≈ 10 · (largest eigenvalue) / λ |
# | `"ekfac"` | eigenvalue-corrected Kronecker factors (Linear, Conv2d) | two passes; layer width² |
# | `"identity"` | gradient dot products, no curvature | one pass |
# | `"tracin"` | gradient dot products summed over training checkpoints | checkpoints × one pass |
#
# This notebook runs all of them on one workload, measures each against `"exact"` per
# layer and times them, then shows `LayerInfluence.check`, the tool for models where
# `"exact"` is out of reach. It closes with advice on which one to choose.
#
# Under the test suite it runs on fewer images (`CAPTUM_LAYERINF_TUTORIAL_SMALL=1`).

# %%
import os
import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr

from captum_layerinf import LayerInfluence, LiSSASettings
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.models import DigitsVGG
from captum_layerinf.training import accuracy, train_classifier

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
N_TRAIN = 64 if SMALL else 1000  # training images
N_TEST = 4 if SMALL else 16  # test images
LISSA_DEPTH = 50 if SMALL else 200  # LiSSA recursion steps per layer
EPOCHS, LR = 100, 1e-2
DAMPING = 0.01  # LayerInfluence's default

# %% [markdown]
# ## The workload
#
# The digits CNN of tutorial 1 (`DigitsVGG` at width 4: four convolutions and two linear
# layers, 1,766 parameters). For TracIn we keep a copy of the weights every 20 epochs
# during training, with the learning rate used there.

# %%
torch.manual_seed(0)
train, test = load_digits_split(n_train=N_TRAIN, seed=0)
checkpoints = []


def keep(epoch, model):
    """Saves a checkpoint (a state dict; file paths work too) every 20 epochs."""
    if epoch % 20 == 19:
        checkpoints.append({k: v.clone() for k, v in model.state_dict().items()})


model = train_classifier(
    DigitsVGG(width=4, hidden=16), train, epochs=EPOCHS, lr=LR, on_epoch_end=keep
)
print(f"test accuracy {accuracy(model, test):.1%}; {len(checkpoints)} checkpoints")
x_test, y_test = test[:N_TEST]

# %% [markdown]
# ## All strategies on the same problem
#
# Each run includes the constructor and the fit (building or factorising the curvature),
# as a user would pay it. `damping=0.01` (the default) for all of them; TracIn has no
# Hessian and ignores it. LiSSA gets a fixed budget of `LISSA_DEPTH` steps per layer
# (its automatic depth, about `7 · scale / λ`, runs to hundreds or thousands of steps
# per layer at this damping); it warns if the budget was not enough to converge.

# %%
strategies = {
    "exact": dict(hessian="exact"),
    "cg": dict(hessian="cg"),
    "lissa": dict(hessian=LiSSASettings(depth=LISSA_DEPTH)),
    "ekfac": dict(hessian="ekfac"),
    "identity": dict(hessian="identity"),
    "tracin": dict(
        hessian="tracin", checkpoints=checkpoints, learning_rates=[LR] * len(checkpoints)
    ),
}
scores, seconds = {}, {}
for name, kwargs in strategies.items():
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        li = LayerInfluence(model, train, damping=DAMPING, **kwargs)
        scores[name] = li.influence((x_test, y_test))
    seconds[name] = time.perf_counter() - start
    print(f"{name:<9} {seconds[name]:6.2f} s")
    for w in caught:
        if not issubclass(w.category, FutureWarning):
            print(f"          warning: {w.message}")
layers = li.layer_names

# %% [markdown]
# ## Accuracy against `"exact"`
#
# Per layer, over all (test, training) pairs: Pearson correlation (do the scores have
# the right shape?), Spearman rank correlation (are the proponents in the right order?),
# and the slope of a strategy's scores on the exact ones (are they on the right scale?).


# %%
def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors' entries."""
    return float(pearsonr(a.flatten(), b.flatten())[0])


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two tensors' entries."""
    return float(spearmanr(a.flatten(), b.flatten())[0])


exact = scores["exact"]
table = {}  # name -> (pearson [layers], spearman [layers], slope [layers])
for name, s in scores.items():
    table[name] = (
        np.array([pearson(s[i], exact[i]) for i in range(len(layers))]),
        np.array([spearman(s[i], exact[i]) for i in range(len(layers))]),
        np.array(
            [float((s[i] * exact[i]).sum() / (exact[i] ** 2).sum()) for i in range(len(layers))]
        ),
    )

header = f"{'strategy':<9} {'seconds':>8} | " + " | ".join(f"{n:>12}" for n in layers)
print("Pearson / Spearman with exact, per layer")
print(header)
print("-" * len(header))
for name, (p, s, _) in table.items():
    cells = " | ".join(f"{a:5.3f} {b:5.3f}".rjust(12) for a, b in zip(p, s, strict=True))
    print(f"{name:<9} {seconds[name]:8.2f} | {cells}")
print("\nslope of the scores on exact's (1 = same scale)")
for name, (*_, k) in table.items():
    print(f"{name:<9} " + "  ".join(f"{v:7.3g}" for v in k))

# %% [markdown]
# `cg` is exact up to its tolerance, so it must agree perfectly; the others are
# approximations or other quantities altogether:

# %%
assert table["cg"][0].min() > 0.999
assert (table["exact"][0] > 0.999999).all()

# %%
fig, (ax_acc, ax_time) = plt.subplots(
    1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2.2, 1]}
)
names = list(table)
width = 0.8 / len(names)
for j, name in enumerate(names):
    ax_acc.bar(np.arange(len(layers)) + j * width, table[name][0], width, label=name)
ax_acc.set_xticks(np.arange(len(layers)) + 0.4 - width / 2, layers, fontsize=8)
ax_acc.set_ylabel("Pearson with exact")
low = min(0.0, np.floor(5 * min(t[0].min() for t in table.values())) / 5)
ax_acc.set_ylim(low, 1.18)  # room for the legend above the bars
ax_acc.set_yticks(np.arange(low, 1.01, 0.2))
ax_acc.legend(fontsize=7, ncol=len(names), loc="upper center")
ax_acc.set_title(f"agreement per layer (damping {DAMPING})", fontsize=10)
ax_time.barh(names, [seconds[n] for n in names], color=[f"C{j}" for j in range(len(names))])
ax_time.set_xscale("log")
ax_time.set_xlabel("seconds (fit + scores)")
ax_time.invert_yaxis()
ax_time.set_title(f"{N_TRAIN} train x {N_TEST} test", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# What to read from it:
#
# - **`cg`** reproduces `exact` to its tolerance (1e-6 in float32). It never builds the
#   block, so it is the accurate choice for layers too large to hold as a P x P matrix;
#   each iteration is a pass over the training set, for all test images at once.
# - **`lissa`** converges to the same answer, but slowly: its error along an eigenvalue
#   μ shrinks as `(1 − μ/scale)^depth`, so the small eigenvalues set its cost. With a
#   small budget the shape of the scores is often right already while their scale
#   (the slope) is still off, and its residual warning says so.
# - **`ekfac`** costs about as much as one or two epochs of training and scales to VGG16,
#   but its Kronecker factors are an approximation. How good depends on the model and
#   above all on the damping (next section); on the wider digits CNN of the EK-FAC
#   benchmark (docs/ekfac.md) its per-layer Pearson is 0.54–0.79 at λ = 0.01 and
#   0.76–0.92 at λ = 0.1.
# - **`identity`** and **`tracin`** are not approximations of the influence function:
#   they measure gradient similarity (TracIn along the training trajectory). They are
#   the cheapest and answer a different question; TracIn's scale is set by the learning
#   rates.
#
# ## The damping decides how good approximations are
#
# Larger damping makes the blocks better conditioned, pulls every curvature-based
# method towards `identity / λ`, and makes EK-FAC's errors in small eigenvalues matter
# less. A sweep with `exact` and `ekfac`:

# %%
print(f"{'damping':>8} | mean Pearson of ekfac with exact over layers")
sweep = {}
for damping in (0.001, 0.01, 0.1, 1.0):
    ref = LayerInfluence(model, train, damping=damping).influence((x_test, y_test))
    approx = LayerInfluence(model, train, hessian="ekfac", damping=damping).influence(
        (x_test, y_test)
    )
    sweep[damping] = np.array([pearson(approx[i], ref[i]) for i in range(len(layers))])
    print(f"{damping:>8} | {sweep[damping].mean():.3f}  (worst layer {sweep[damping].min():.3f})")

# %% [markdown]
# Damping is not free: it is part of the estimate. `damping=λ` is the exact choice for a
# model trained with L2 weight decay `λ` on the mean loss; otherwise it trades fidelity
# to the model's own curvature for stability, so choose it once, by what you can
# defend, and keep it fixed while you compare strategies.
#
# ## When `exact` is out of reach: `LayerInfluence.check`
#
# On a large model you cannot compute `exact` to compare with. `check` fits your
# strategy and an exact reference (the damped Gauss-Newton block, inverted exactly, for
# Linear and Conv2d layers) on the curvature of the same random subset of the training
# set (`n_curvature`, 64 images by default), scores a random subset of test and training
# images with both, and reports the same per-layer numbers.
# It warns when a layer's Pearson correlation falls below `warn_below` (0.9 by default):

# %%
ekfac = LayerInfluence(model, train, hessian="ekfac", damping=DAMPING)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    report = ekfac.check((x_test, y_test), n_test=min(4, N_TEST), n_train=min(64, N_TRAIN))
print(report)
print("warnings:", [str(w.message)[:90] + "..." for w in caught if "agrees" in str(w.message)])

# %% [markdown]
# Because `check` compares on a random subset of pairs, its numbers differ somewhat from
# the full-matrix correlations above; use enough images (`n_test`, `n_train`) that a
# weak layer cannot hide, and check again when the model or the damping changes.
#
# ## Which one to choose
#
# 1. **Small layers (up to a few thousand parameters each): `"exact"`.** It is exact,
#    and its Gauss–Newton construction for ReLU networks makes it fast.
# 2. **Large layers where you need the influence function itself: `"cg"`**, exact to
#    its tolerance without holding the block. Raise `damping` or lower the number of
#    test images per call if it is slow.
# 3. **Very large models (VGG16 and up) or many test images: `"ekfac"`**, after running
#    `check` on a sample; where a layer is reported poor, raise the damping or use `cg`
#    for that layer (`layers=[...]` selects layers per instance).
# 4. **`"lissa"`** when Hessian-vector products are all you can afford and `cg` is not
#    applicable; give it the depth its warning asks for.
# 5. **`"identity"` / `"tracin"`** as baselines, or when you care about the training
#    trajectory rather than the converged model (TracIn).
# 6. **`"captum"`** only as a cross-check: it delegates each layer to Captum's
#    `NaiveInfluenceFunction` (tutorial 1).
