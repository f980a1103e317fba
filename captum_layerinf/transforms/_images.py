"""Image types in and out of the kernels: PIL, tv_tensors and plain tensors `[..., C, H, W]`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

RANGE_FIX = (
    "These transforms take images in [0, 1] (float) or [0, 255] (uint8): apply them before "
    "Normalize, or convert with torchvision.transforms.v2.ToDtype(torch.float32, scale=True)."
)


def dispatch(image: Any, kernel: Callable[[Tensor], Tensor], what: str = "image") -> Any:
    """Runs a tensor kernel on a PIL image, a tv_tensor or a plain tensor; returns the same type.

    Args:
        image: A `PIL.Image.Image`, a `tv_tensors.Image` / `tv_tensors.Video` or a tensor
            `[..., C, H, W]` (uint8, or float in [0, 1]).
        kernel: Maps a plain tensor `[..., C, H, W]` to one of the same shape and dtype.
        what: Name of the argument, for error messages.

    Returns:
        The kernel's output, as the type of `image` (tv_tensors re-wrapped like the input).
    """
    if isinstance(image, PIL.Image.Image):
        image = _supported_mode(image)
        return TF.to_pil_image(kernel(TF.pil_to_tensor(image)), mode=image.mode)
    plain = as_tensor(image, what)
    if isinstance(image, tv_tensors.TVTensor):
        return tv_tensors.wrap(kernel(plain), like=image)
    return kernel(plain)


def _supported_mode(image: PIL.Image.Image) -> PIL.Image.Image:
    if image.mode in ("L", "RGB", "RGBA"):
        return image
    return image.convert("RGB")  # palette indices, CMYK, 16-bit: not colours to edit


def as_tensor(image: Any, what: str = "image") -> Tensor:
    """A plain tensor `[..., C, H, W]` of a PIL image, an image tv_tensor or a tensor."""
    if isinstance(image, PIL.Image.Image):
        return TF.pil_to_tensor(_supported_mode(image))
    if isinstance(image, tv_tensors.TVTensor):
        if not isinstance(image, (tv_tensors.Image, tv_tensors.Video)):
            raise TypeError(
                f"`{what}` is a tv_tensors.{type(image).__name__}; these kernels transform images "
                "(tv_tensors.Image / Video, PIL images or plain tensors). Pass masks as `mask=`."
            )
        return image.as_subclass(Tensor)
    if isinstance(image, Tensor):
        return image
    raise TypeError(
        f"`{what}` must be a PIL image, a tv_tensors.Image or a tensor [..., C, H, W]; "
        f"got {type(image).__name__}."
    )


def check_image(image: Tensor, what: str = "image", channels: tuple[int, ...] | None = None):
    """Validates a plain image tensor `[..., C, H, W]`: dtype, value range, NaNs, channels."""
    if image.dim() < 3:
        raise ValueError(
            f"`{what}` must have shape [..., C, H, W]; got {tuple(image.shape)}. "
            "Add the channel dimension with image.unsqueeze(-3)."
        )
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise TypeError(
            f"`{what}` has dtype {image.dtype}; expected uint8 or a float dtype. {RANGE_FIX}"
        )
    if image.is_floating_point():
        if not torch.isfinite(image).all():
            raise ValueError(f"`{what}` contains NaN or infinite values; clean the image first.")
        if image.numel() and (image.min() < 0 or image.max() > 1):
            raise ValueError(
                f"`{what}` has values in [{float(image.min()):.3g}, {float(image.max()):.3g}], "
                f"outside [0, 1]. {RANGE_FIX}"
            )
    if channels is not None and image.shape[-3] not in channels:
        raise ValueError(
            f"`{what}` has {image.shape[-3]} channels (shape {tuple(image.shape)}); expected "
            f"{' or '.join(map(str, channels))} (grayscale or RGB). Drop an alpha channel with "
            "image[..., :3, :, :] or convert a PIL image with .convert('RGB')."
        )


def to_float(image: Tensor) -> Tensor:
    """A float32 copy in [0, 1] of a uint8 or float image."""
    if image.dtype == torch.uint8:
        return image.float() / 255
    return image.float()


def from_float(image: Tensor, dtype: torch.dtype) -> Tensor:
    """Converts a float image in [0, 1] back to `dtype` (uint8: rounded to the nearest level)."""
    image = image.clamp(0, 1)
    if dtype == torch.uint8:
        return (image * 255).round().to(torch.uint8)
    return image.to(dtype)


def foreground(mask: Any, image_shape: torch.Size, what: str = "mask") -> Tensor:
    """The boolean foreground `[..., H, W]` that matches an image `[..., C, H, W]`.

    Nonzero mask values are foreground. Shapes (image `[*B, C, H, W]`):
    `[H, W]` is one mask for every image; `[*B, H, W]` is one mask per image;
    `[*B, K, H, W]` holds K instance masks per image, united into one foreground.
    """
    if isinstance(mask, PIL.Image.Image):
        mask = torch.from_numpy(np.array(mask))
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"`{what}` must be a tensor or tv_tensors.Mask [..., H, W]; got {type(mask).__name__}."
        )
    mask = mask.as_subclass(Tensor)
    if mask.is_floating_point() and not torch.isfinite(mask).all():
        raise ValueError(f"`{what}` contains NaN or infinite values.")
    lead, hw = tuple(image_shape[:-3]), tuple(image_shape[-2:])
    shape = tuple(mask.shape)
    if shape[-2:] == hw:
        if mask.dim() == 2:
            return (mask != 0).expand(*lead, *hw)
        if shape[:-2] == lead:
            return mask != 0
        if mask.dim() == len(lead) + 3 and shape[:-3] == lead:
            return (mask != 0).any(dim=-3)
    raise ValueError(
        f"`{what}` of shape {list(shape)} does not match the image of shape "
        f"{list(image_shape)}: expected {list(hw)} (one mask for all images), "
        f"{list(lead + hw)} (one per image) or {list(lead) + ['K'] + list(hw)} "
        "(K instance masks per image, united)."
    )


def _open(image: Any, what: str, names: dict[str, Callable[[], Tensor]]) -> Any:
    """A path as an "L" or "RGB" PIL image; anything else unchanged."""
    if not isinstance(image, (str, Path)):
        return image
    if not Path(image).is_file():
        raise FileNotFoundError(
            f"`{what}`={str(image)!r} is neither an offline image name ({', '.join(names)}) "
            "nor an existing image file."
        )
    with PIL.Image.open(image) as pil:
        return pil.convert("RGB") if pil.mode not in ("L", "RGB") else pil.copy()


def _as_tensor(image: Any, what: str, names: dict[str, Callable[[], Tensor]]) -> Tensor:
    """A PIL image, numpy array or tensor as a tensor (channels first for the first two)."""
    if isinstance(image, PIL.Image.Image):
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return TF.pil_to_tensor(image)
    if isinstance(image, np.ndarray):
        if image.ndim not in (2, 3):
            raise ValueError(
                f"`{what}` as a numpy array must be [H, W] or [H, W, C]; got {image.shape}."
            )
        array = image if image.ndim == 3 else image[..., None]
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if not isinstance(image, Tensor):
        raise TypeError(
            f"`{what}` must be an offline image name ({', '.join(names)}), a file path, a PIL "
            f"image, a numpy array [H, W(, C)] or a tensor [C, H, W]; got {type(image).__name__}."
        )
    return image


def load_reference(image: Any, what: str, names: dict[str, Callable[[], Tensor]]) -> Tensor:
    """A texture or style image as float32 `[C, H, W]` in [0, 1] with C in {1, 3}.

    Args:
        image: An offline image name (a key of `names`), a path to an image file, a PIL image,
            a numpy array `[H, W]` / `[H, W, C]` (as scikit-image returns them) or a tensor
            `[C, H, W]` / `[1, C, H, W]` (uint8, or float in [0, 1]).
        what: Name of the argument, for error messages.
        names: Offline images by name: functions returning float `[C, H, W]`.
    """
    if isinstance(image, str) and image in names:
        return names[image]()
    image = _as_tensor(_open(image, what, names), what, names)
    image = image.as_subclass(Tensor)
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3:
        raise ValueError(
            f"`{what}` must be one image [C, H, W]; got shape {tuple(image.shape)}. "
            "Pass a list of images to draw one per call."
        )
    check_image(image, what, channels=(1, 3))
    return to_float(image).contiguous()
