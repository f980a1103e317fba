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
# # Tutorial 4: the full disturbance study on your own model and images
#
# Aamir et al. (2023) asked which cue a CNN's decision rests on (the object, its texture or
# the image's style) by showing each test image in four variants (original, white
# background, another class's texture on the object, style-transferred) and reading the
# predictions, the layer-wise influence of every training image and SHAP maps.
# `captum_layerinf.experiments.DisturbanceStudy` runs the whole study from one
# configuration; `captum-layerinf run CONFIG.json` is the same from the shell.
#
# This notebook runs it (1) on the embedded TexturedShapes data, where shape AND texture
# predict the class, and (2) on your own images: an `ImageFolder` tree and a model whose
# weights you saved locally. Nothing is downloaded. With `CAPTUM_LAYERINF_TUTORIAL_SMALL=1`
# (the test run) the sizes shrink; the code is the same.

# %%
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from captum_layerinf.analysis import class_average, intra_inter
from captum_layerinf.datasets import CLASS_NAMES, make_shapes
from captum_layerinf.experiments import DisturbanceStudy, StudyConfig, tiny_config

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
torch.set_num_threads(1)
work = Path(tempfile.mkdtemp(prefix="study-"))

# %% [markdown]
# ## The embedded data
# Eight classes; each has a shape and a typical texture, on cluttered backgrounds, with exact
# foreground masks. In training images the texture is the class's own 90% of the time.

# %%
sample = make_shapes(2, seed=0)
fig, axes = plt.subplots(2, 8, figsize=(10, 2.8))
for i, ax in enumerate(axes.T.flat):
    ax.imshow(sample.images[i].permute(1, 2, 0))
    ax.set_title(CLASS_NAMES[int(sample.labels[i])], fontsize=6)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## One configuration, one run
# `StudyConfig` is a frozen dataclass; it is saved as `config.json` beside the results, and
# every stage (data, model, variants, predictions, influence, global influence, SHAP,
# texture sweep) is saved as it finishes: a rerun skips finished stages.

# %%
config = (
    tiny_config(n_train_per_class=16, epochs=8, width=4, shap_images=1)
    if SMALL
    else StudyConfig(n_train_per_class=100, epochs=10, show_progress=False)
)
result = DisturbanceStudy(config, work / "shapes").run()
print("\n".join(result.findings))
print("report:", result.report)

# %% [markdown]
# The report (`report.html`) is self-contained: open it in a browser. Every table is also a
# JSON file under `tables/`, every figure a PNG under `figures/`, and the raw scores are in
# `stages/`: the analyses are plain functions on tensors that you can rerun on your own.

# %%
stage = lambda name: torch.load(work / "shapes" / "stages" / f"{name}.pt", weights_only=True)  # noqa: E731
data, variants, influence = stage("data"), stage("variants"), stage("influence")
scores = influence["scores"]  # [n_layers, n_test x 4 variants, n_train]
per_layer = class_average(scores, data["train_labels"], len(data["class_names"]))
intra_l, inter_l = intra_inter(per_layer, variants["labels"])  # [n_layers, n_test]
for v, name in enumerate(["original", "white background", "textured", "styled"]):
    sel = variants["variants"] == v
    print(f"{name:>16}: intra-class I_l_avg of the last layer {intra_l[-1, sel].mean():+.3g}")

# %% [markdown]
# ## Your own images and your own model
# Put your images in an `ImageFolder` tree with `train/` and `test/` (one subfolder per
# class). Your model is any `nn.Module`: name an importable factory `"package.module:function"`
# (called as `function(num_classes=n)`) and a local state dict in `weights`. A torchvision
# name such as `"resnet18"` works too. Nothing is downloaded; white-background masks come
# from GrabCut. Here we write the image folder from generated images, a factory that builds
# a torchvision ResNet-18 without weights, and its state dict, so the cell runs anywhere.
# The study hashes the data files, the weights and the factory's source: new images or
# weights at the same path recompute the stages that depend on them.

# %%
import sys  # noqa: E402

import torchvision  # noqa: E402
from PIL import Image  # noqa: E402

root = work / "my_images"
n_own = 4 if SMALL else len(CLASS_NAMES)  # classes of your own data
for split, per_class, seed in (("train", 4 if SMALL else 40, 1), ("test", 1, 2)):
    # a few images per class: a stand-in for your own photos
    images = make_shapes(per_class, seed=seed)
    for i, (image, label) in enumerate(zip(images.images, images.labels, strict=True)):
        if label >= n_own:
            continue
        folder = root / split / CLASS_NAMES[int(label)].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")

(work / "my_models.py").write_text(
    "import torchvision\n\n"
    "def resnet(num_classes):\n"
    "    return torchvision.models.resnet18(weights=None, num_classes=num_classes)\n"
)
sys.path.insert(0, str(work))  # where your module lives: on PYTHONPATH
torch.manual_seed(0)
resnet = torchvision.models.resnet18(weights=None, num_classes=n_own)
# ... train `resnet` on your data here; we save its initial weights to keep the cell short
torch.save(resnet.state_dict(), work / "resnet_mine.pt")

own = replace(
    config,
    data="imagefolder",
    data_path=str(root),
    n_train_per_class=40,
    model="my_models:resnet",
    weights=str(work / "resnet_mine.pt"),
    # 11 M parameters: no dense blocks. EK-FAC per layer, no global score; the small run
    # uses plain gradient similarity (identity curvature) to stay quick.
    hessian="identity" if SMALL else "ekfac",
    global_hessian="none",
)
own.save(work / "own.json")  # the same as: captum-layerinf run own.json --out DIR
result = DisturbanceStudy(StudyConfig.load(work / "own.json"), work / "own").run()
print("\n".join(result.findings))

# %% [markdown]
# With `global_hessian="none"` the report has no global row: a block-diagonal curvature
# would only repeat the compound score. `"cg"` gives Eq. 5 with the true Hessian, at one
# pass over the training set per iteration (see tutorial 5 for the strategies).
