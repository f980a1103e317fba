"""Feature extractors for the Gram (texture / style) and content losses.

The default, `RandomFilterCNN`, downloads nothing: a small CNN with random, fixed filters.
`VGGFeatures` is torchvision's VGG16 / VGG19 `features` with weights the user already has.
"""

from __future__ import annotations

import functools
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import WeightsEnum
from torchvision.models.vgg import cfgs, make_layers

_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


class GramFeatures(nn.Module, ABC):
    """Maps RGB images `[N, 3, H, W]` in [0, 1] to named feature maps for the Gram losses.

    Subclasses set `style_layers` (feature maps whose Gram matrices describe texture and
    style) and `content_layers` (feature maps compared directly to keep the content).
    Their parameters are fixed: nothing is trained.
    """

    style_layers: tuple[str, ...]
    content_layers: tuple[str, ...]

    @abstractmethod
    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Feature maps `{name: Tensor [N, C_l, H_l, W_l]}` of images `[N, 3, H, W]`."""


def _blur_down(x: Tensor) -> Tensor:
    """Halves the resolution with a 5-tap binomial (Gaussian-pyramid) filter.

    Average pooling would do it cheaper, but its gradient is constant on 2x2 blocks, which
    prints a block pattern into synthesised images.
    """
    c = x.shape[1]
    kernel = (_BINOMIAL[:, None] * _BINOMIAL[None, :]).to(x).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, stride=2, groups=c)


class RandomFilterCNN(GramFeatures):
    """A multi-scale CNN with random, fixed filters: the offline default feature extractor.

    Random filters synthesise textures (Ustyuzhaninov et al., ICLR 2017), and a network that
    was never trained transfers style with per-layer loss normalisation (He, Wang &
    Hopcroft, NeurIPS 2016). This one is a five-level pyramid: at each level a 3x3 random
    convolution and a ReLU, then a binomial blur that halves the resolution, so the levels
    see 3 to ~50 pixels. Its Gram matrices, plus that of the pixels themselves (colour
    statistics), are the style layers; level 3 is the content layer.

    Quality to expect: textures with the right colours, grain and element size (gravel,
    grass: convincing; brick: bricks and mortar lines, but less regular rows than the
    original), and style transfer that carries colours and brush-stroke texture but none
    of the semantic arrangement a trained VGG gives. Label results as an approximation of
    Gatys et al.; pass `VGGFeatures` with real weights for the paper-quality version.

    Args:
        channels: Output channels of the levels, finest first.
        seed: Seed of the filters; the same seed gives the same network everywhere.

    Examples:
        >>> features = RandomFilterCNN()
        >>> sorted(features(torch.rand(1, 3, 32, 32)))
        ['pixels', 'relu1', 'relu2', 'relu3', 'relu4', 'relu5']
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256, 256), seed: int = 0) -> None:
        super().__init__()
        if len(channels) < 1 or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be positive ints; got {channels!r}.")
        gen = torch.Generator().manual_seed(seed)
        c_in = 3
        for level, c_out in enumerate(channels, start=1):
            weight = torch.randn(int(c_out), c_in, 3, 3, generator=gen)
            if c_in == 3:
                # zero-mean filters on pixels: they see pattern, the pixel Gram sees colour
                weight -= weight.mean(dim=(1, 2, 3), keepdim=True)
            weight *= (2.0 / (c_in * 9)) ** 0.5  # He scaling keeps activations O(1) per level
            self.register_buffer(f"weight{level}", weight)
            c_in = int(c_out)
        self.seed = seed
        self.style_layers = ("pixels", *(f"relu{i}" for i in range(1, len(channels) + 1)))
        self.content_layers = (f"relu{min(3, len(channels))}",)

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Feature maps of images `[N, 3, H, W]`; levels below 4 x 4 pixels are left out."""
        x = images - 0.5
        out = {"pixels": x}
        for level in range(1, len(self.style_layers)):
            if level > 1:
                if min(x.shape[-2:]) < 8:
                    break
                x = _blur_down(x)
            weight = getattr(self, f"weight{level}")
            x = F.relu(F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight))
            out[f"relu{level}"] = x
        return out


@functools.lru_cache(maxsize=1)
def default_features() -> RandomFilterCNN:
    """The shared default extractor: `RandomFilterCNN()` with seed 0."""
    return RandomFilterCNN()


_VGG_CFG = {"vgg16": "D", "vgg19": "E"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _vgg_layer_names(layers: nn.Sequential) -> list[str]:
    """Gatys' names for torchvision's VGG `features`: conv1_1, relu1_1, ..., pool1, ..."""
    names, block, index = [], 1, 1
    for module in layers:
        if isinstance(module, nn.Conv2d):
            names.append(f"conv{block}_{index}")
        elif isinstance(module, nn.ReLU):
            names.append(f"relu{block}_{index}")
            index += 1
        else:
            names.append(f"pool{block}")
            block, index = block + 1, 1
    return names


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torchvision caches a weights enum's file (`$TORCH_HOME/hub/checkpoints/...`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _load_state(weights: WeightsEnum | str | os.PathLike | Mapping[str, Tensor]) -> dict:
    if isinstance(weights, WeightsEnum):
        path = cached_weights_path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"{weights} is not cached at {path}, and this package never downloads. Either "
                f"fetch it once on a machine with internet access (torchvision.models."
                f"get_model_builder(...)(weights={weights}) saves it there; TORCH_HOME moves "
                "the cache) or pass the path of a saved state dict: VGGFeatures(weights=PATH)."
            )
        weights = path
    if isinstance(weights, (str, os.PathLike)):
        if not Path(weights).is_file():
            raise FileNotFoundError(f"no state-dict file at {str(weights)!r}.")
        weights = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(weights, Mapping):
        raise TypeError(
            "weights must be a torchvision weights enum (e.g. VGG19_Weights.IMAGENET1K_V1), "
            f"a state-dict path or a state dict; got {type(weights).__name__}."
        )
    state = dict(weights)
    if any(k.startswith("features.") for k in state):
        state = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    return state


def _load_into(layers: nn.Sequential, state: dict, arch: str) -> None:
    fix = f"the state dict does not fit torchvision's {arch}().features"
    try:
        missing, unexpected = layers.load_state_dict(state, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{fix}: {error}. Was it saved from another architecture?") from None
    if missing or unexpected:
        raise ValueError(
            f"{fix}: missing {missing[:4]}, unexpected {unexpected[:4]}. Was it saved from "
            "another architecture?"
        )


class VGGFeatures(GramFeatures):
    """torchvision's VGG16 / VGG19 `features` with the user's weights (Gatys et al. 2015).

    Images are normalised with the ImageNet mean and std inside. Max-pooling is replaced by
    average pooling (`pool="avg"`), as Gatys et al. recommend for synthesis. Nothing is
    downloaded: a weights enum loads only when its file is already in torchvision's cache.

    Args:
        arch: "vgg16" or "vgg19".
        weights: A torchvision weights enum whose file is cached locally (e.g.
            `VGG19_Weights.IMAGENET1K_V1`), the path of a saved state dict (of the whole
            VGG, keys `features.0.weight`, ..., or of `features` alone) or a state dict.
            None: random weights seeded by `seed` (an untrained VGG, He et al. 2016).
        style_layers: Names (`relu1_1`, `conv3_2`, `pool2`, ...) whose Gram matrices are
            matched.
        content_layers: Names whose feature maps keep the content.
        pool: "avg" or "max".
        seed: Seed of the random weights when `weights` is None.

    Raises:
        FileNotFoundError: A weights enum that is not cached, or a path that does not exist.
    """

    mean: Tensor  # buffers [1, 3, 1, 1]: ImageNet normalisation
    std: Tensor

    def __init__(
        self,
        arch: str = "vgg19",
        weights: Any = None,
        style_layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
        content_layers: Sequence[str] = ("relu4_2",),
        pool: str = "avg",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if arch not in _VGG_CFG:
            raise ValueError(f"arch must be one of {sorted(_VGG_CFG)}; got {arch!r}.")
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max'; got {pool!r}.")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layers = make_layers(cfgs[_VGG_CFG[arch]])
        if weights is not None:
            _load_into(layers, _load_state(weights), arch)
        names = _vgg_layer_names(layers)
        wanted = [*style_layers, *content_layers]
        unknown = [n for n in wanted if n not in names]
        if unknown or not style_layers:
            raise ValueError(
                f"unknown VGG layer names {unknown} (need at least one style layer); "
                f"valid: {names}."
            )
        last = max(names.index(n) for n in wanted)
        for i, module in enumerate(layers):
            if isinstance(module, nn.ReLU):
                module.inplace = False  # the hooks below keep these outputs
            if pool == "avg" and isinstance(module, nn.MaxPool2d):
                layers[i] = nn.AvgPool2d(2, 2)
        self.layers = layers[: last + 1].requires_grad_(False).eval()
        self.names = names[: last + 1]
        self.arch = arch
        self.style_layers = tuple(style_layers)
        self.content_layers = tuple(content_layers)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """Feature maps of images `[N, 3, H, W]` at the style and content layers."""
        wanted = set(self.style_layers) | set(self.content_layers)
        x, out = (images - self.mean) / self.std, {}
        for name, module in zip(self.names, self.layers, strict=True):
            if min(x.shape[-2:]) < 2 and isinstance(module, (nn.AvgPool2d, nn.MaxPool2d)):
                break  # images too small for the deeper layers: those are left out
            x = module(x)
            if name in wanted:
                out[name] = x
        return out
