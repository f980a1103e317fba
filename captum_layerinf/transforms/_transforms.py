"""torchvision v2 transforms: thin classes that draw parameters and call the kernels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2._utils import is_pure_tensor

from . import functional as F
from ._features import GramFeatures
from ._images import as_tensor, load_reference
from .styles import offline_images


def _is_image(inpt: Any) -> bool:
    """Whether a sample item is an image these transforms change (not a mask, box, label)."""
    return isinstance(
        inpt, (PIL.Image.Image, tv_tensors.Image, tv_tensors.Video)
    ) or is_pure_tensor(inpt)


def _find_mask(flat_inputs: list[Any]) -> Tensor | None:
    """The sample's `tv_tensors.Mask`, if it has one."""
    masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
    if len(masks) > 1:
        raise ValueError(
            f"the sample holds {len(masks)} tv_tensors.Mask items; these transforms take one "
            "foreground mask per image ([..., H, W]; [..., K, H, W] instance masks are united)."
        )
    return masks[0].as_subclass(Tensor) if masks else None


def _load_references(value: Any, what: str) -> list[Tensor]:
    """One or several texture / style images, loaded now (float `[C, H, W]`)."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"`{what}` is an empty list; pass at least one image.")
    return [load_reference(item, what, offline_images()) for item in items]


def _describe(value: Any) -> str:
    """A short name of the texture / style argument for `repr`."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    return ", ".join(v if isinstance(v, str) else type(v).__name__ for v in items)


def _range(value: Any, what: str) -> tuple[float, float]:
    """A number, or a `(low, high)` range to draw uniformly from, inside [0, 1]."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = high = float(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = (float(v) for v in value)
    else:
        raise TypeError(f"{what} must be a number or a range (low, high); got {value!r}.")
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], or a range (low, high) in it; got {value!r}.")
    return low, high


class _Synthesis(Transform):
    """Shared parameter drawing of `TextureTransfer` and `StyleTransfer`."""

    def __init__(
        self,
        references: list[Tensor],
        use_mask: bool,
        segmenter: F.Segmenter | None,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        self._references = references
        self.use_mask = use_mask
        self.segmenter = segmenter
        self.generator = generator

    def _draw_index(self) -> int:
        if len(self._references) == 1:
            return 0
        return int(torch.randint(len(self._references), (1,), generator=self.generator))

    def _draw(self, low: float, high: float) -> float:
        if low == high:
            return low
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def _mask(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not self.use_mask:
            return None
        if params["mask"] is None and self.segmenter is not None:
            return F._segment(as_tensor(inpt), self.segmenter)
        return params["mask"]


class WhiteBackground(Transform):
    """Puts the object on a white background: the paper's "white background" probe.

    The foreground comes from a `tv_tensors.Mask` in the sample when there is one (nonzero
    = object; `[B, H, W]` beside an Image `[B, C, H, W]` is one mask per image), otherwise
    from `segmenter`, run on each image. Foreground pixels are left bit-identical; the
    mask, boxes and labels pass through unchanged.

    Args:
        fill: Background value in units of the value range: 1.0 is white (1.0 for float
            images, 255 for uint8 ones); one number or one per channel.
        segmenter: Callable mapping one image `[C, H, W]` to its foreground `[H, W]`, used
            when the sample has no Mask. Default: `GrabCutSegmenter()`, GrabCut from a
            centred box (see its documented limits: supply masks for real experiments).

    Examples:
        >>> img = tv_tensors.Image(torch.rand(3, 16, 16))
        >>> mask = tv_tensors.Mask(torch.zeros(16, 16, dtype=torch.bool))
        >>> out, out_mask, label = WhiteBackground()(img, mask, 3)
        >>> bool((out == 1).all()), label
        (True, 3)
    """

    def __init__(
        self, fill: float | Sequence[float] = 1.0, segmenter: F.Segmenter | None = None
    ) -> None:
        super().__init__()
        F._check_fill(fill, 1 if isinstance(fill, (int, float)) else len(fill))
        self.fill = fill
        self.segmenter = segmenter

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """The sample's foreground mask (None: segment each image)."""
        return {"mask": _find_mask(flat_inputs)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """White background on images; anything else passes through."""
        if not _is_image(inpt):
            return inpt
        return F.white_background(inpt, params["mask"], self.fill, self.segmenter)


class TextureTransfer(_Synthesis):
    """Gives the object another texture (Gatys et al. texture synthesis): the "textured" probe.

    Optimises the image from itself towards the texture's Gram statistics with weight
    `strength` against its own content (`texture_transfer` defines the loss), over the
    object when the sample has a `tv_tensors.Mask` (background bit-identical), else over
    the whole image (or the `segmenter`'s foreground, when one is given). The paper's Fig. 6
    sweeps `strength` (the percentage of texture) and `steps`: see `texture_sweep`.

    Default feature extractor: `RandomFilterCNN()`, offline random filters; textures come
    out with the right colours, grain and element size but less regular than with a
    trained VGG (pass `features=VGGFeatures(weights=...)` for that). Measured on one
    CPU core (AMD EPYC) at 100 steps: 2.5 s per 64 x 64 image, 19 s per 224 x 224 image.

    Args:
        texture: An offline image name ("brick", "grass", "gravel", ...), a file path, a
            PIL image, a numpy array or a tensor `[C, H, W]` (C = 1 or 3); or a list of
            them, one drawn per call.
        strength: Fraction of texture in [0, 1], or a range `(low, high)` drawn uniformly.
        steps: L-BFGS iterations.
        use_mask: Texture only the object given by a Mask in the sample (or `segmenter`).
        segmenter: Foreground of each image when the sample has no Mask (e.g.
            `GrabCutSegmenter()`); None: the whole image.
        features: Feature extractor for the Gram losses (default `RandomFilterCNN()`).
        texture_scale: The texture's shorter side relative to the image's.
        show_progress: Show a tqdm bar per image.
        generator: Random generator for the draws (texture, strength); default torch's.

    Examples:
        >>> t = TextureTransfer("gravel", strength=0.8, steps=5)
        >>> t(tv_tensors.Image(torch.rand(3, 32, 32))).shape
        torch.Size([3, 32, 32])
    """

    def __init__(
        self,
        texture: Any,
        strength: float | tuple[float, float] = 1.0,
        steps: int = F.DEFAULT_STEPS,
        use_mask: bool = True,
        segmenter: F.Segmenter | None = None,
        features: GramFeatures | None = None,
        texture_scale: float = 1.0,
        show_progress: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(_load_references(texture, "texture"), use_mask, segmenter, generator)
        self.texture = _describe(texture)
        self.strength = _range(strength, "strength")
        self.steps = F._check_steps(steps)[0]
        self.features = F._check_features(features)
        self.texture_scale = texture_scale
        self.show_progress = show_progress

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draws the texture and strength of this call; finds the sample's Mask."""
        return {
            "reference": self._draw_index(),
            "strength": self._draw(*self.strength),
            "mask": _find_mask(flat_inputs) if self.use_mask else None,
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Textures images; anything else passes through."""
        if not _is_image(inpt):
            return inpt
        return F.texture_transfer(
            inpt,
            self._references[params["reference"]],
            params["strength"],
            self.steps,
            self._mask(inpt, params),
            self.features,
            self.texture_scale,
            self.show_progress,
        )


class StyleTransfer(_Synthesis):
    """Paints the image in another style (Gatys et al. 2015): the paper's "styled" probe.

    Optimises the image from itself on `content_weight · L_content + style_weight · L_Gram`
    with L-BFGS (`style_transfer` defines the losses), or runs a trained feed-forward
    network (Johnson et al. 2016) given as `network`. The paper's artworks cannot ship:
    offline styles are "brush_strokes", "mosaic", "waves" (generated) and the scikit-image
    photos "hubble_deep_field", "immunohistochemistry"; any image file works too.

    Default feature extractor: `RandomFilterCNN()` (offline): colours and stroke texture
    transfer convincingly, the semantic layout of a trained VGG does not; label results
    an approximation, or pass `features=VGGFeatures(weights=...)`.

    Args:
        style_image: Style image (offline name, path, PIL image, numpy array or tensor
            `[C, H, W]`), or a list of them, one drawn per call. Not needed with `network`.
        content_weight: Weight of the content loss.
        style_weight: Weight of the Gram (style) loss.
        steps: L-BFGS iterations.
        use_mask: Style only the object given by a Mask in the sample (or `segmenter`).
        segmenter: Foreground of each image when `use_mask` and the sample has no Mask.
        features: Feature extractor for the losses (default `RandomFilterCNN()`).
        network: A trained style network, RGB float `[N, 3, H, W]` in [0, 1] to the same.
        style_scale: The style image's shorter side relative to the image's.
        tv_weight: Weight of a total-variation smoothness term.
        show_progress: Show a tqdm bar per image.
        generator: Random generator for drawing the style image; default torch's.

    Examples:
        >>> t = StyleTransfer("mosaic", steps=5)
        >>> t(torch.rand(2, 3, 32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(
        self,
        style_image: Any = None,
        content_weight: float = 1.0,
        style_weight: float = F.DEFAULT_STYLE_WEIGHT,
        steps: int = F.DEFAULT_STEPS,
        use_mask: bool = False,
        segmenter: F.Segmenter | None = None,
        features: GramFeatures | None = None,
        network: nn.Module | None = None,
        style_scale: float = 1.0,
        tv_weight: float = 0.0,
        show_progress: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if style_image is None and network is None:
            raise ValueError("StyleTransfer needs a `style_image` (or a trained `network`).")
        refs = [] if style_image is None else _load_references(style_image, "style_image")
        super().__init__(refs, use_mask, segmenter, generator)
        self.style_image = _describe(style_image)
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.steps = F._check_steps(steps)[0]
        self.features = F._check_features(features)
        self.network = network
        self.style_scale = style_scale
        self.tv_weight = tv_weight
        self.show_progress = show_progress

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draws the style image of this call; finds the sample's Mask."""
        return {
            "reference": self._draw_index() if self._references else None,
            "mask": _find_mask(flat_inputs) if self.use_mask else None,
        }

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Styles images; anything else passes through."""
        if not _is_image(inpt):
            return inpt
        index = params["reference"]
        return F.style_transfer(
            inpt,
            None if index is None else self._references[index],
            self.content_weight,
            self.style_weight,
            self.steps,
            self._mask(inpt, params),
            self.features,
            self.network,
            self.style_scale,
            self.tv_weight,
            self.show_progress,
        )
