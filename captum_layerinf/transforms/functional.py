"""Functional kernels of the disturbance transforms (white background, texture, style).

Each kernel takes a PIL image, a `tv_tensors.Image` / `Video` or a tensor `[..., C, H, W]`
(uint8, or float in [0, 1]) and returns the same type, shape and dtype. Leading dimensions
are a batch: every image is processed on its own, so a batch gives what a loop gives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

from ._features import GramFeatures, default_features
from ._gram import Objective, gram_loss, rgb, synthesise, target_grams
from ._images import (
    as_tensor,
    check_image,
    dispatch,
    foreground,
    from_float,
    load_reference,
    to_float,
)
from .segmenters import GrabCutSegmenter
from .styles import offline_images

Segmenter = Callable[[Tensor], Any]
"""A callable mapping one image `[C, H, W]` to its foreground `[H, W]` (nonzero = object)."""

DEFAULT_STEPS = 100
DEFAULT_STYLE_WEIGHT = 20.0


def _check_fill(fill: float | Sequence[float], channels: int) -> Tensor:
    values = torch.as_tensor(fill, dtype=torch.float64).flatten()
    if values.numel() not in (1, channels) or not torch.isfinite(values).all():
        raise ValueError(f"fill must be one number or one per channel ({channels}); got {fill!r}.")
    if (values < 0).any() or (values > 1).any():
        raise ValueError(
            f"fill is in units of the value range, in [0, 1] (1.0 = white, also for uint8 "
            f"images, where it means 255); got {fill!r}."
        )
    return values


def _segment(image: Tensor, segmenter: Segmenter) -> Tensor:
    """Foreground `[..., H, W]` of every image in `image [..., C, H, W]`, one call each."""
    flat = image.reshape(-1, *image.shape[-3:])
    masks = []
    for one in flat:
        mask = torch.as_tensor(segmenter(one))
        if tuple(mask.shape) != tuple(one.shape[-2:]):
            raise ValueError(
                f"the segmenter returned a mask of shape {tuple(mask.shape)} for an image of "
                f"shape {tuple(one.shape)}; it must return [H, W]."
            )
        masks.append(mask.to(image.device) != 0)
    return torch.stack(masks).reshape(*image.shape[:-3], *image.shape[-2:])


def white_background(
    image: Any,
    mask: Any = None,
    fill: float | Sequence[float] = 1.0,
    segmenter: Segmenter | None = None,
) -> Any:
    """The object on a white (or `fill`-coloured) background; the object's pixels unchanged.

    Args:
        image: PIL image, `tv_tensors.Image` or tensor `[..., C, H, W]` (uint8 or float in
            [0, 1]).
        mask: Foreground (nonzero = object): `[H, W]` for all images, `[..., H, W]` one per
            image, or `[..., K, H, W]` instance masks united. None: ask `segmenter`.
        fill: Background value in units of the value range: 1.0 is white (1.0 for float
            images, 255 for uint8), 0.0 black; one number or one per channel.
        segmenter: Used when `mask` is None: maps one image `[C, H, W]` to its foreground
            `[H, W]`. Default: `GrabCutSegmenter()` (a centred box; see its limits).

    Returns:
        The image with every background pixel set to `fill`, same type, shape and dtype;
        foreground pixels are bit-identical to the input.

    Examples:
        >>> img = torch.rand(3, 8, 8)
        >>> fg = torch.zeros(8, 8, dtype=torch.bool)
        >>> fg[2:6, 2:6] = True
        >>> out = white_background(img, fg)
        >>> bool((out[:, ~fg] == 1).all() and torch.equal(out[:, fg], img[:, fg]))
        True
    """

    def kernel(x: Tensor) -> Tensor:
        check_image(x)
        values = _check_fill(fill, x.shape[-3])
        fg = (
            _segment(x, segmenter or GrabCutSegmenter())
            if mask is None
            else foreground(mask, x.shape)
        )
        fg = fg.to(x.device)
        scale = 255.0 if x.dtype == torch.uint8 else 1.0
        level = (values * scale).round() if x.dtype == torch.uint8 else values * scale
        background = level.to(x.dtype).to(x.device).view(-1, 1, 1).expand(x.shape[-3:])
        return torch.where(fg.unsqueeze(-3), x, background)

    return dispatch(image, kernel)


def _reference(
    reference: Any, what: str, channels: int, height: int, width: int, scale: float
) -> Tensor:
    """A texture / style image as float `[1, 3, h, w]`, resized to `scale` x the image's size.

    A grayscale reference is repeated to RGB; an RGB one is turned to gray (luminance) for
    a grayscale image. Its shorter side is resized to `scale` times the image's shorter side
    (aspect ratio kept), so its pattern keeps its relative size on images of any size.
    """
    ref = load_reference(reference, what, offline_images())[None]
    if ref.shape[1] == 3 and channels == 1:
        ref = TF.rgb_to_grayscale(ref)  # a grayscale image gets the reference's luminance
    if not scale > 0:
        raise ValueError(f"the {what} scale must be positive; got {scale}.")
    side = max(1, round(scale * min(height, width)))
    return rgb(TF.resize(ref, side, antialias=True).clamp(0, 1))


def _cover(reference: Tensor, height: int, width: int) -> Tensor:
    """`reference [1, 3, h, w]` tiled to cover `height x width`, then cropped to it."""
    h, w = reference.shape[-2:]
    tiled = reference.repeat(1, 1, -(-height // h), -(-width // w))
    return tiled[..., :height, :width]


def _check_features(features: GramFeatures | None) -> GramFeatures:
    if features is None:
        return default_features()
    if not isinstance(features, GramFeatures):
        raise TypeError(
            "features must be a GramFeatures (RandomFilterCNN(), VGGFeatures(...)); got "
            f"{type(features).__name__}."
        )
    return features


def _check_steps(steps: Any, what: str = "steps") -> list[int]:
    values = list(steps) if isinstance(steps, (list, tuple, range)) else [steps]
    if not values or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in values):
        raise ValueError(f"{what} must be non-negative ints; got {steps!r}.")
    return values


def _synthesis_kernel(
    reference: Any,
    what: str,
    objective: Callable[[float], Objective],
    weights: Sequence[float],
    steps: Sequence[int],
    mask: Any,
    features: GramFeatures | None,
    scale: float,
    show_progress: bool,
) -> Callable[[Tensor], dict[tuple[float, int], Tensor]]:
    """A kernel that optimises every image towards `reference` for each weight and step count.

    `objective(w)` gives the loss weights for each entry w of `weights`; the kernel returns
    `{(w, steps): image [..., C, H, W]}` in the input's dtype, the background (outside
    `mask`) bit-identical to the input.
    """
    extractor = _check_features(features)

    def kernel(x: Tensor) -> dict[tuple[float, int], Tensor]:
        check_image(x, channels=(1, 3))
        fg = None if mask is None else foreground(mask, x.shape).to(x.device)
        h, w = x.shape[-2:]
        ref = _reference(reference, what, x.shape[-3], h, w, scale).to(x.device)
        feats = extractor.to(x.device)
        grams = target_grams(feats, ref)
        flat = x.reshape(-1, *x.shape[-3:])
        flat_fg = None if fg is None else fg.reshape(-1, 1, h, w)
        out: dict[tuple[float, int], list[Tensor]] = {}
        for i, one in enumerate(flat):
            keep = None if flat_fg is None else flat_fg[i : i + 1].float()
            for weight in weights:
                results: dict[int, Tensor] = {}
                moving = [k for k in steps if k > 0]
                empty = keep is not None and not keep.any()
                if moving and not empty and objective(weight).gram_weight > 0:
                    results = synthesise(
                        to_float(one)[None],
                        grams,
                        feats,
                        objective(weight),
                        moving,
                        keep,
                        None if keep is None else _cover(ref, h, w),
                        show_progress,
                        f"{what} transfer",
                    )
                for k in steps:
                    # nothing to change: the input's own bits, not a float round trip
                    y = one.clone() if k not in results else from_float(results[k][0], x.dtype)
                    out.setdefault((weight, k), []).append(y)
        final = {}
        for key, images in out.items():
            y = torch.stack(images).reshape(x.shape)
            final[key] = y if fg is None else torch.where(fg.unsqueeze(-3), y, x)
        return final

    return kernel


def _texture_objective(strength: float) -> Objective:
    return Objective(content_weight=1.0 - strength, gram_weight=strength)


def _check_strength(strength: Any) -> float:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TypeError(f"strength must be a number in [0, 1]; got {type(strength).__name__}.")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength is the fraction of texture, in [0, 1]; got {strength}.")
    return float(strength)


def texture_transfer(
    image: Any,
    texture: Any,
    strength: float = 1.0,
    steps: int = DEFAULT_STEPS,
    mask: Any = None,
    features: GramFeatures | None = None,
    texture_scale: float = 1.0,
    show_progress: bool = False,
) -> Any:
    r"""Gatys-style texture transfer: the texture's Gram statistics imposed on the object.

    The image is optimised, starting from itself, with L-BFGS (`steps` iterations) on

        L = (1 - strength) · L_content + strength · L_Gram

    where L_Gram = mean over layers of ||G_l(x) - G_l(texture)||² / ||G_l(texture)||² (the
    relative Gram error, over the object only when `mask` is given) and L_content = mean
    over content layers of ||F_l(x) - F_l(image)||² / ||F_l(image)||². Both are relative
    errors, so `strength` is the share of the loss given to the texture: the paper's
    "percentage of texture". `strength=0` returns the image unchanged; `strength=1` is pure
    texture synthesis initialised from the image (the object's outline and shading show
    through for the first tens of steps). The background outside `mask` is bit-identical.

    Args:
        image: PIL image, `tv_tensors.Image` or tensor `[..., C, H, W]` (C = 1 or 3; uint8
            or float in [0, 1]).
        texture: An offline image name ("brick", "grass", "gravel", ... see
            `available_images()`), a file path, a PIL image, a numpy array `[H, W(, C)]` or
            a tensor `[C, H, W]` with C = 1 or 3.
        strength: Fraction of texture in [0, 1].
        steps: L-BFGS iterations (0 returns the image).
        mask: Foreground to texture (see `white_background`); None: the whole image.
        features: Feature extractor; default `RandomFilterCNN()` (offline, random filters:
            an approximation of the VGG-based original; see its docstring).
        texture_scale: The texture's shorter side is resized to `texture_scale` times the
            image's shorter side.
        show_progress: Show a tqdm bar per image.

    Returns:
        The textured image, same type, shape and dtype.

    Examples:
        >>> cat = torch.rand(3, 32, 32)
        >>> out = texture_transfer(cat, "gravel", strength=0.8, steps=5)
        >>> out.shape
        torch.Size([3, 32, 32])
    """
    strength = _check_strength(strength)
    n_steps = _check_steps(steps)[0]
    kernel = _synthesis_kernel(
        texture,
        "texture",
        _texture_objective,
        [strength],
        [n_steps],
        mask,
        features,
        texture_scale,
        show_progress,
    )
    return dispatch(image, lambda x: kernel(x)[(strength, n_steps)])


def style_transfer(
    image: Any,
    style: Any = None,
    content_weight: float = 1.0,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    steps: int = DEFAULT_STEPS,
    mask: Any = None,
    features: GramFeatures | None = None,
    network: nn.Module | None = None,
    style_scale: float = 1.0,
    tv_weight: float = 0.0,
    show_progress: bool = False,
) -> Any:
    """Artistic style transfer: Gatys et al. (2015) optimisation, or a trained network.

    Optimisation: the image is optimised from itself with L-BFGS on
    `content_weight · L_content + style_weight · L_Gram + tv_weight · TV` (the relative
    losses of `texture_transfer`). A feed-forward network (Johnson et al. 2016) trained for
    one style replaces the optimisation when given as `network`.

    Args:
        image: PIL image, `tv_tensors.Image` or tensor `[..., C, H, W]` (C = 1 or 3; uint8
            or float in [0, 1]).
        style: The style image: an offline image name ("brush_strokes", "mosaic", "waves",
            "hubble_deep_field", ... see `available_images()`), a file path, a PIL image, a
            numpy array or a tensor `[C, H, W]`. Not needed with `network`.
        content_weight: Weight of the content loss.
        style_weight: Weight of the Gram (style) loss.
        steps: L-BFGS iterations.
        mask: Region to style (see `white_background`); None: the whole image.
        features: Feature extractor; default `RandomFilterCNN()` (offline; colours and
            stroke texture carry over, the semantic layout of a trained VGG does not).
        network: A trained feed-forward style network mapping RGB float `[N, 3, H, W]` in
            [0, 1] to the same (wrap one that expects 0-255 or ImageNet normalisation).
        style_scale: The style image's shorter side is resized to this times the image's.
        tv_weight: Weight of a total-variation smoothness term.
        show_progress: Show a tqdm bar per image.

    Returns:
        The styled image, same type, shape and dtype.
    """
    n_steps = _check_steps(steps)[0]
    for name, value in (
        ("content_weight", content_weight),
        ("style_weight", style_weight),
        ("tv_weight", tv_weight),
    ):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a non-negative number; got {value!r}.")
    if network is not None:
        return dispatch(image, lambda x: _run_network(x, network, mask))
    if style is None:
        raise ValueError("style_transfer needs a `style` image (or a trained `network`).")

    def objective(_: float) -> Objective:
        return Objective(float(content_weight), float(style_weight), float(tv_weight))

    kernel = _synthesis_kernel(
        style, "style", objective, [1.0], [n_steps], mask, features, style_scale, show_progress
    )
    return dispatch(image, lambda x: kernel(x)[(1.0, n_steps)])


def _run_network(x: Tensor, network: nn.Module, mask: Any) -> Tensor:
    """Applies a feed-forward style network to every image of `x [..., C, H, W]`."""
    check_image(x, channels=(1, 3))
    flat = rgb(to_float(x).reshape(-1, *x.shape[-3:]))
    with torch.no_grad():
        styled = network(flat)
    if not isinstance(styled, Tensor) or styled.shape != flat.shape:
        raise ValueError(
            f"the style network must return a tensor of the input's shape {tuple(flat.shape)}; "
            f"got {getattr(styled, 'shape', type(styled).__name__)}."
        )
    if x.shape[-3] == 1:
        styled = TF.rgb_to_grayscale(styled)
    y = from_float(styled.reshape(x.shape), x.dtype)
    if mask is None:
        return y
    return torch.where(foreground(mask, x.shape).to(x.device).unsqueeze(-3), y, x)


@dataclass(frozen=True)
class TextureSweep:
    """A grid of textured images over strength and steps (the paper's Fig. 6).

    Attributes:
        images: Tensor `[n_strengths, n_steps, C, H, W]`, the input's dtype.
        strengths: The strengths, rows of the grid.
        steps: The L-BFGS step counts, columns of the grid.
        gram_distance: Tensor `[n_strengths, n_steps]`: relative Gram distance of each
            image (over the mask, if any) to the texture.
    """

    images: Tensor
    strengths: tuple[float, ...]
    steps: tuple[int, ...]
    gram_distance: Tensor


def texture_sweep(
    image: Any,
    texture: Any,
    strengths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    steps: Sequence[int] = (10, 25, 50, 100),
    mask: Any = None,
    features: GramFeatures | None = None,
    texture_scale: float = 1.0,
    show_progress: bool = False,
) -> TextureSweep:
    """Texture transfer over a grid of strengths and step counts, for a Fig.-6-style plot.

    One optimisation per strength yields all step counts (snapshots), and cell
    `(s, k)` equals `texture_transfer(image, texture, s, k, ...)`.

    Args:
        image: One image: PIL, `tv_tensors.Image` or tensor `[C, H, W]`.
        texture: As in `texture_transfer`.
        strengths: Fractions of texture in [0, 1].
        steps: L-BFGS step counts.
        mask: Foreground `[H, W]` to texture; None: the whole image.
        features: Feature extractor (default `RandomFilterCNN()`).
        texture_scale: As in `texture_transfer`.
        show_progress: Show a tqdm bar per strength.

    Returns:
        A `TextureSweep`; plot it with `plot_texture_sweep`.
    """
    strengths = tuple(_check_strength(s) for s in strengths)
    step_list = tuple(_check_steps(steps))
    x = as_tensor(image)
    if x.dim() != 3:
        raise ValueError(f"texture_sweep takes one image [C, H, W]; got {tuple(x.shape)}.")
    check_image(x, channels=(1, 3))
    if mask is not None:
        mask = foreground(mask, x.shape)  # [H, W]: fits every cell of the grid
    kernel = _synthesis_kernel(
        texture,
        "texture",
        _texture_objective,
        strengths,
        step_list,
        mask,
        features,
        texture_scale,
        show_progress,
    )
    cells = kernel(x)
    images = torch.stack([torch.stack([cells[(s, k)] for k in step_list]) for s in strengths])
    distance = gram_distance(images.flatten(0, 1), texture, mask, features, texture_scale)
    return TextureSweep(images, strengths, step_list, distance.view(len(strengths), -1))


def gram_distance(
    image: Any,
    reference: Any,
    mask: Any = None,
    features: GramFeatures | None = None,
    scale: float = 1.0,
) -> Tensor:
    """Relative Gram distance of each image to a texture or style image: the L_Gram above.

    Args:
        image: PIL image, `tv_tensors.Image` or tensor `[..., C, H, W]`.
        reference: Texture or style image, as in `texture_transfer`.
        mask: Foreground over which the image's Gram matrices are taken, with the object
            pasted on the reference as in the optimisation; None: the whole image.
        features: Feature extractor (default `RandomFilterCNN()`).
        scale: The reference's size relative to the image, as `texture_scale`.

    Returns:
        Tensor `[...]`, one distance per image (0 = identical Gram statistics).
    """
    x = as_tensor(image)
    check_image(x, channels=(1, 3))
    extractor = _check_features(features).to(x.device)
    h, w = x.shape[-2:]
    ref = _reference(reference, "reference", x.shape[-3], h, w, scale).to(x.device)
    grams = target_grams(extractor, ref)
    flat = rgb(to_float(x).reshape(-1, *x.shape[-3:]))
    fg = None
    if mask is not None:
        fg = foreground(mask, x.shape).to(x.device).reshape(-1, 1, h, w)
        flat = torch.where(fg, flat, _cover(ref, h, w))  # as the optimiser sees the object
        fg = fg.float()
    with torch.no_grad():
        return gram_loss(extractor(flat), grams, fg).reshape(x.shape[:-3])
