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
# # Layer-wise influence on a torchvision ResNet
#
# A torchvision `resnet18` has 62 parameter-owning modules (convolutions, batch-norms, the
# classifier) and 11 M parameters: far too many for a dense Hessian block per layer. This
# notebook shows what the default `hessian="auto"` does with it: which strategy each layer
# gets and why, how long each call takes, and how much memory the process needs.
#
# Nothing is downloaded: the network is trained here for a few epochs on scikit-learn's
# bundled digits, upsampled to 32x32 RGB. Under the test suite it runs on fewer images and
# a few layers (`CAPTUM_LAYERINF_TUTORIAL_SMALL=1`), same code path.

# %%
import os
import resource
import time
import warnings

import torch
import torch.nn.functional as F
import torchvision

from captum_layerinf import LayerInfluence
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.training import accuracy, train_classifier

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
N_TRAIN = 32 if SMALL else 500
N_TEST = 4 if SMALL else 16
EPOCHS = 2 if SMALL else 10
torch.manual_seed(0)


def to_rgb32(ds):
    """Digits `[n, 1, 8, 8]` as `[n, 3, 32, 32]` images, and their labels."""
    x, y = ds.tensors
    return F.interpolate(x, size=32, mode="bilinear").repeat(1, 3, 1, 1), y


train_ds, test_ds = load_digits_split(n_train=N_TRAIN, n_test=N_TEST)
train, test = to_rgb32(train_ds), to_rgb32(test_ds)
model = torchvision.models.resnet18(weights=None, num_classes=10)
model = train_classifier(model, torch.utils.data.TensorDataset(*train), epochs=EPOCHS)
print(f"test accuracy {accuracy(model, torch.utils.data.TensorDataset(*test)):.2f}")

# %% [markdown]
# ## The layers, and the strategy each one gets
#
# `LayerInfluence` takes every module that owns trainable parameters, in forward order.
# `li.strategies` tells, without computing anything, which strategy "auto" gives each
# layer: `exact` (a dense damped block, exact) where the float64 block fits 128 MiB
# (4,096 parameters: the batch-norms and the classifier), EK-FAC for the larger
# convolutions, and for the global score (all 11 M parameters, Eq. 5) a block-diagonal
# approximation over modules.

# %%
layers = None
if SMALL:  # the stem and the classifier
    layers = ["conv1", "bn1", "fc"]
li = LayerInfluence(model, train, layers=layers, batch_size=32)
print(f"{len(li.layer_names)} layers")
for name, (strategy, reason) in li.strategies.items():
    print(f"{name:24s} {strategy:14s} {reason}")

# %% [markdown]
# ## Time and memory of each call

# %%
timings = {}
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # the one-line summary of "auto" is printed above
    calls = [("influence", lambda: li.influence(test))]
    if not SMALL:  # the global score fits every module of the network
        calls.append(("global_influence", lambda: li.global_influence(test)))
    calls.append(("check", lambda: li.check(test, warn_below=-1.0)))
    for key, call in calls:
        start = time.perf_counter()
        result = call()
        timings[key] = time.perf_counter() - start
        print(f"{key:18s} {timings[key]:6.1f} s")
scores, report = li.influence(test), result
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"peak RSS of this process: {peak:,.0f} MiB")
print(f"scores: {tuple(scores.shape)} = [layers, test images, training images]")

# %% [markdown]
# The global score fits every module of the network (block-diagonal), reusing the blocks
# that the layer-wise fit already has; with the default layers that is all of them, so it
# costs little once `influence` has run. `check` refits the strategy and a reference on the
# curvature of 64 random training images and compares them per layer:

# %%
print(report)
assert torch.isfinite(scores).all() and report.pearson.shape == (len(li.layer_names),)

# %% [markdown]
# The most influential training images of the first test image, per layer: where the
# layers disagree, the decision rests on different evidence at different depths.

# %%
top = li.influence(test, k=3)
for name, idx in zip(li.layer_names, top.indices[:, 0].tolist(), strict=True):
    print(f"{name:24s} {idx}")
