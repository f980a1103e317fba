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
# # Disturbances and texture bias
#
# Does a CNN recognise a cat by its shape, or by its fur? Geirhos et al. (2019) showed
# that ImageNet CNNs lean on texture; Aamir, Tamosiunaite & Wörgötter (2023) probe the
# same question with **disturbances**: they change one cue of a test image and look at
# how the decision, and the training images that influenced it, change:
#
# - **white background**: the object alone, its context removed;
# - **textured object**: the object's surface replaced by another texture (brick,
#   grass, gravel), its shape kept;
# - **styled image**: the whole image painted in another style.
#
# `captum_layerinf.transforms` provides them as torchvision v2 transforms: they take
# PIL images, `tv_tensors.Image` (uint8 or float in [0, 1]) and plain tensors
# `[..., C, H, W]`, batched or not, and pass masks, boxes and labels through, so they
# drop into a `v2.Compose` pipeline. Nothing is downloaded: the photos come with
# scikit-image, the textures too, and the styles are generated.
#
# Under the test suite this notebook runs at a small size with few optimisation steps
# (`CAPTUM_LAYERINF_TUTORIAL_SMALL=1`); the code path is the same.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch
from skimage import data
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from captum_layerinf.transforms import (
    GrabCutSegmenter,
    StyleTransfer,
    TextureTransfer,
    WhiteBackground,
    available_images,
    load_style,
    plot_disturbances,
    plot_gram_distance,
    plot_texture_sweep,
    texture_sweep,
)

SMALL = os.environ.get("CAPTUM_LAYERINF_TUTORIAL_SMALL") == "1"
SIZE = 48 if SMALL else 128  # shorter side of the photos, in pixels
STEPS = 10 if SMALL else 100  # L-BFGS steps of texture and style transfer
SWEEP_STEPS = (2, 5, 10) if SMALL else (10, 25, 50, 100)
torch.manual_seed(0)
# The optimisation runs thousands of small convolutions; on a shared or small machine
# one thread is often faster than several spin-waiting on each other.
torch.set_num_threads(1)

# %% [markdown]
# ## Photos and masks
#
# Three scikit-image photos, resized so that their shorter side is `SIZE`. The object is
# found by `GrabCutSegmenter`: OpenCV's GrabCut started from a centred box. It separates
# by colour, so it is a convenience, not ground truth: when it finds nothing it warns and
# returns its box, and it loses thin parts. For real experiments supply your own masks
# (any `[H, W]` tensor, nonzero = object).


# %%
def photo(name: str) -> tv_tensors.Image:
    """A scikit-image photo as a uint8 Image `[3, H, W]` with shorter side SIZE."""
    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)
    return tv_tensors.Image(TF.resize(image, SIZE, antialias=True))


names = ["chelsea", "coffee", "astronaut"]
photos = {name: photo(name) for name in names}
segment = GrabCutSegmenter()
masks = {name: tv_tensors.Mask(segment(img)) for name, img in photos.items()}
for name in names:
    print(f"{name}: {tuple(photos[name].shape)}, object covers {masks[name].float().mean():.0%}")

# %% [markdown]
# ## White background
#
# `WhiteBackground` reads the `tv_tensors.Mask` in the sample and fills everything else
# with `fill` (1.0 = white, in units of the value range: 255 for uint8 images). Object
# pixels stay bit-identical, and the mask passes through unchanged.

# %%
white = {}
for name in names:
    white[name], mask_out = WhiteBackground()(photos[name], masks[name])
    fg = masks[name].bool()
    assert torch.equal(white[name][:, fg], photos[name][:, fg])  # the object is untouched
    assert (white[name][:, ~fg] == 255).all()  # uint8 white
    assert torch.equal(mask_out, masks[name])

# %% [markdown]
# ## Texture and style
#
# `TextureTransfer` re-synthesises the object (over the mask) towards the Gram
# statistics of a texture (Gatys et al. 2015) — `strength` is the fraction of texture
# against the object's own content. `StyleTransfer` does the same for the whole image
# with a style image. The offline images to choose from:

# %%
print(available_images())

fig, axes = plt.subplots(1, 4, figsize=(9, 2.4))
for ax, name in zip(axes, ["brick", "gravel", "brush_strokes", "mosaic"], strict=True):
    ax.imshow(load_style(name).permute(1, 2, 0).squeeze(), cmap="gray")
    ax.set_title(name, fontsize=9)
    ax.axis("off")
plt.show()

# %% [markdown]
# The features behind the Gram losses are by default a `RandomFilterCNN`: random, fixed
# filters on an image pyramid. Random-filter networks synthesise convincing textures
# (Ustyuzhaninov et al. 2017) and serviceable styles (He et al. 2016) and need no
# downloaded weights. They are an approximation of the trained VGG of the paper; pass
# `features=VGGFeatures("vgg19", weights=...)` with locally cached weights for that.
#
# The three probes on each photo, the textures placed on the white-background object as
# in the paper:

# %%
textures = {"chelsea": "brick", "coffee": "grass", "astronaut": "gravel"}
styles = {"chelsea": "brush_strokes", "coffee": "mosaic", "astronaut": "waves"}
rows = []
start = time.perf_counter()
for name in names:
    textured, _ = TextureTransfer(textures[name], strength=1.0, steps=STEPS)(
        white[name], masks[name]
    )
    styled = StyleTransfer(styles[name], steps=STEPS)(photos[name])
    rows.append([photos[name], white[name], textured, styled])
print(
    f"{len(names)} textures and styles at {SIZE} px, {STEPS} steps: "
    f"{time.perf_counter() - start:.1f} s"
)

fig, ax = plot_disturbances(
    rows,
    row_labels=[f"{n}\n+ {textures[n]}\n+ {styles[n]}" for n in names],
    column_labels=["original", "white background", "textured object", "styled"],
    height=SIZE,
)
plt.show()

# %% [markdown]
# ## In a pipeline
#
# The transforms are ordinary torchvision v2 transforms, so they compose, and a sample
# may carry a mask and a label alongside the image. Here a pipeline that puts the
# object on white and gives it 50–100 % of a texture drawn from two, on a batch of two
# float images `[2, 3, H, W]` with one mask each `[2, H, W]`:

# %%
pipeline = v2.Compose(
    [
        WhiteBackground(),
        TextureTransfer(["brick", "gravel"], strength=(0.5, 1.0), steps=max(2, STEPS // 2)),
    ]
)
height = min(photos["chelsea"].shape[-2], photos["coffee"].shape[-2])
width = min(photos["chelsea"].shape[-1], photos["coffee"].shape[-1])
batch = tv_tensors.Image(
    torch.stack([TF.center_crop(photos[n], [height, width]) for n in ("chelsea", "coffee")])
    .float()
    .div(255)
)
batch_masks = tv_tensors.Mask(
    torch.stack([TF.center_crop(masks[n], [height, width]) for n in ("chelsea", "coffee")])
)
out, out_masks, label = pipeline(batch, batch_masks, 7)
print(type(out).__name__, tuple(out.shape), out.dtype, "label:", label)
assert (out[:, :, ~batch_masks[0].bool()][0] == 1.0).all()  # float white is 1.0

# %% [markdown]
# ## The texture sweep (the paper's Fig. 6)
#
# How much texture is enough to change a decision? `texture_sweep` textures one image
# over a grid of strengths (rows) and L-BFGS step counts (columns) — one optimisation
# per strength, its snapshots giving the step counts — and measures each cell's Gram
# distance to the texture.

# %%
cat = photos["chelsea"]
start = time.perf_counter()
sweep = texture_sweep(
    cat, "gravel", strengths=(0.0, 0.5, 1.0), steps=SWEEP_STEPS, mask=masks["chelsea"]
)
print(f"sweep {tuple(sweep.images.shape)} in {time.perf_counter() - start:.1f} s")
print("Gram distance to gravel [strengths, steps]:")
print(sweep.gram_distance)

fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.8, 1]})
plot_texture_sweep(sweep, ax=left, height=SIZE)
left.set_title("gravel on the object of chelsea", fontsize=10)
plot_gram_distance(sweep, ax=right)
fig.tight_layout()
plt.show()

# %% [markdown]
# At strength 0 the image is returned unchanged (distance constant over steps). With
# more texture and more steps the object's Gram statistics approach the texture's:
# the distance falls along each row and from row to row. At intermediate strengths it
# levels off where the texture term and the object's own content balance: that balance,
# not the number of steps, sets how much of the object survives.

# %%
assert torch.equal(sweep.images[0, -1], cat)  # 0 % texture: the input itself
assert sweep.gram_distance[-1, -1] < sweep.gram_distance[0, -1]

# %% [markdown]
# ## Texture bias, next
#
# With these images in hand, the study feeds each version of a test image to the model
# and asks, with layer-wise influence, which training images drove the decision: does
# the textured cat still draw on cats, or on brick walls? In which layers? That is
# tutorial 4, *the full study on your own model and images*; tutorial 1 introduces
# layer-wise influence itself.
