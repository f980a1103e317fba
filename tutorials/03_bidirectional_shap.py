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
# # Bidirectional explanations with SHAP
#
# A classifier's decision on a test image can be explained from two sides:
#
# - the **test side**: which pixels of the image pushed the class score up or down.
#   Shapley values (Lundberg & Lee 2017) share the difference between the model's output
#   on the image and its average output on reference images among the pixels;
# - the **training side**: which training images drove the decision, layer by layer.
#   Layer-wise influence (Aamir, Tamosiunaite & Wörgötter 2023) scores every training
#   image against the test image through one layer's parameters at a time.
#
# The paper shows the two side by side (its Fig. 10). `BidirectionalExplainer` computes
# both for a batch of test images and returns them in one object; `plot_bidirectional`
# draws them in one figure.
#
# In this tutorial we
#
# 1. train a small VGG-style CNN on scikit-learn's 8 x 8 digits (bundled, offline),
# 2. explain a few test digits from both sides and draw them,
# 3. check what the SHAP values mean (they add up to the logit gap),
# 4. read the per-image summary numbers (foreground share, spread, layer agreement),
# 5. cache the result on disk, and compare shap's expected gradients with Captum's
#    `GradientShap`.
#
# Under the test suite the notebook runs on fewer images
# (`CAPTUM_LAYERINF_TUTORIAL_SMALL=1`); the code path is the same.

# %%
import os
import tempfile
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from captum.attr import GradientShap

from captum_layerinf import LayerInfluence
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.models import DigitsVGG
from captum_layerinf.shapley import BidirectionalExplainer, BidirectionalResult, plot_bidirectional
from captum_layerinf.training import accuracy, train_classifier

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
N_TRAIN = 200 if SMALL else 1000  # training images (of 1797 digits)
N_TEST = 6 if SMALL else 16  # test images explained
EPOCHS = 40 if SMALL else 30
NSAMPLES = 100 if SMALL else 200  # expected-gradient samples per image
torch.manual_seed(0)
torch.set_num_threads(1)  # tiny convolutions: one thread is fastest on a busy machine

# %% [markdown]
# ## 1. A small CNN on digits
#
# `DigitsVGG` is laid out like torchvision's VGG (convolutions and max-pooling, then two
# linear layers) with 6 parameterised layers.

# %%
train, test = load_digits_split(n_train=N_TRAIN, seed=0)
model = train_classifier(DigitsVGG(), train, epochs=EPOCHS, lr=3e-3)
print(f"test accuracy: {accuracy(model, test):.3f}")

# The first test digits, plus the first misclassified one (if any) to look at later.
x_all, y_all = test[:]
with torch.no_grad():
    wrong = (model(x_all).argmax(1) != y_all).nonzero().flatten()[:1]
pick = torch.cat([torch.arange(N_TEST - len(wrong)), wrong])
x, y = x_all[pick], y_all[pick]

# %% [markdown]
# ## 2. Both directions at once
#
# `LayerInfluence` holds the training side; `BidirectionalExplainer` adds the SHAP side.
# Its default SHAP estimator is `"gradient"`: shap's `GradientExplainer` (expected
# gradients), which works on any differentiable model. `"deep"` (shap's DeepExplainer,
# DeepLIFT-SHAP) is exact in its additivity and faster, and is run on a copy of the model
# without in-place ReLUs; where shap cannot handle a model (a module called twice, a
# functional `F.relu`) it falls back to `"gradient"` with a warning. `"partition"` (Owen
# values on a pixel hierarchy) is model-agnostic and slower; its first call in a process
# compiles shap's numba kernels.
#
# The background (the reference images SHAP compares against) defaults to 50 training
# images drawn with `seed`. The masks are the digits' ink: the *foreground* whose share
# of the positive SHAP mass we want to know.

# %%
li = LayerInfluence(model, train)  # hessian="exact", damping=1e-2
explainer = BidirectionalExplainer(model, li, "gradient", nsamples=NSAMPLES, seed=0)
start = time.perf_counter()
result = explainer.explain((x, y), k=3, masks=x[:, 0] > 0, explain_train=True)
print(f"explained {len(result)} digits in {time.perf_counter() - start:.1f} s")
print("SHAP values     ", tuple(result.shap_values.shape), "= [n, (predicted, true), C, H, W]")
print("proponents      ", tuple(result.proponents.shape), "= [layers + compound, n, k]")
print("rows            ", result.layer_names)
print("training images ", tuple(result.train_inputs.shape), "(each one in the top-k somewhere)")

# %% [markdown]
# `plot_bidirectional` draws one test image: on the left the image and its SHAP map for
# the predicted class (red raises the class score, blue lowers it: shap's colours), on
# the right the top-3 proponents and opponents of the compound score and of the first, a
# middle and the last layer, with their class and score. Green titles have the predicted
# class. With `train_shap=True` each training image's own SHAP map (for its own class)
# sits under it: what the network sees in the images that drove the decision.

# %%
fig, axes = plot_bidirectional(result, 0, opponents=True, train_shap=True)
plt.show()

# %% [markdown]
# For a misclassified digit both SHAP maps are drawn: for the predicted and for the true
# class. The influence scores are those of the loss at the **true** label, as in the
# paper: proponents are the training images that support the correct answer (orange
# titles: the true class), opponents those that pushed the network away from it.

# %%
if len(wrong):
    fig, axes = plot_bidirectional(result, len(result) - 1, opponents=True)
    plt.show()
else:
    print("every explained digit is classified correctly")

# %% [markdown]
# ## 3. What the SHAP values mean
#
# SHAP values add up: over all pixels, they sum to the logit minus its average over the
# background. DeepLIFT-SHAP satisfies this exactly; expected gradients only in
# expectation (a Monte-Carlo estimate with `nsamples` draws). Both estimate attributions
# of the same logit and should look alike.

# %%
background = train[:50][0]
deep = BidirectionalExplainer(model, li, "deep", background=background).explain((x, y), k=1)
with torch.no_grad():
    gap = model(x) - model(background).mean(0)
gap = gap[torch.arange(len(x)), deep.predictions]
total = deep.shap_values[:, 0].sum((1, 2, 3))
print("max |sum of SHAP - logit gap|, deep:", f"{(total - gap).abs().max():.2e}")
corr = np.corrcoef(deep.shap_values[:, 0].flatten(), result.shap_values[:, 0].flatten())[0, 1]
print(f"Pearson correlation, deep vs expected gradients: {corr:.3f}")

# %% [markdown]
# ## 4. Per-image summary numbers
#
# Every result carries per-image numbers, as tensors `[n]`:
#
# - `foreground_share`: share of the positive SHAP mass inside the mask (here the ink);
# - `positive_spread`: how dispersed the positive mass is (radius of gyration relative to
#   a uniform map: 0 = one pixel, 1 = as spread as a uniform map);
# - `positive_area`: the smallest fraction of pixels holding 80 % of it;
# - `layer_agreement`: share of layers whose top-1 proponent has the most frequent class;
# - `prediction_agreement`: share of layers whose top-1 proponent has the predicted class.
#
# The paper found the influential regions of styled and textured images "larger and more
# dispersed" than those of the originals: `positive_spread` and `positive_area` put a
# number on that.

# %%
print(" i | true | pred | fg share | spread | area80 | layer agr. | pred agr.")
for i in range(len(result)):
    print(
        f"{i:2d} | {int(result.labels[i]):4d} | {int(result.predictions[i]):4d} | "
        f"{result.foreground_share[i]:8.2f} | {result.positive_spread[i]:6.2f} | "
        f"{result.positive_area[i]:6.2f} | {result.layer_agreement[i]:10.2f} | "
        f"{result.prediction_agreement[i]:9.2f}"
    )

# %% [markdown]
# ## 5. Caching, and a cross-check with Captum
#
# A result is plain CPU tensors; `save` writes them with `torch.save` and `load` reads them
# back with `weights_only=True`, so a study computes it once and plots it many times.

# %%
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "bidirectional.pt")
    result.save(path)
    again = BidirectionalResult.load(path)
print("same SHAP values after a round trip:", torch.equal(again.shap_values, result.shap_values))

# %% [markdown]
# shap's `GradientExplainer` and Captum's `GradientShap` are two implementations of
# expected gradients: the mean over background images x' and α ~ U(0, 1) of
# (x − x') · ∇f(x' + α (x − x')). With the same background they agree up to their
# Monte-Carlo noise (the test suite checks this pixel by pixel with a z-test).

# %%
c = int(result.predictions[0])
captum = GradientShap(model).attribute(
    x[:1], baselines=background, target=c, n_samples=4 * NSAMPLES, stdevs=0.0
)
gradient_shap = BidirectionalExplainer(model, li, background=background, nsamples=4 * NSAMPLES)
shap_side = gradient_shap.explain((x[:1], y[:1]), k=1)
corr = np.corrcoef(captum.detach().flatten(), shap_side.shap_values[0, 0].flatten())[0, 1]
print(f"Pearson correlation, shap GradientExplainer vs Captum GradientShap: {corr:.3f}")

# %% [markdown]
# ## Where to go next
#
# - Real images: any classifier returning logits works; `plot_bidirectional` draws
#   3-channel inputs in colour and takes `to_image=` to undo a normalisation, and
#   `class_names=` for readable labels.
# - The paper's disturbances (`captum_layerinf.transforms`: white background, texture,
#   style) change what the SHAP maps and the influential images look like; compare
#   `positive_spread` and `layer_agreement` across them.
