"""How well a saliency map points at the object: Gu et al.'s (2018) two evaluations.

- The energy-thresholded pointing game (their Fig. 4): keep the most relevant pixels until
  they hold a given fraction of the map's energy; a hit when what is kept lies in the
  object's box (or mask).
- The ablation score (their Table 1): replace a patch around the map's maximum by the mean
  image and measure how much the target's logit drops.

Both are generic: `evaluate_attribution` takes any Captum attribution method (anything with
`attribute(inputs, target=...)`) or a plain function `(inputs, target) -> maps`;
`RandomAttribution` is the paper's random baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import torch
from captum.attr import Attribution
from torch import Tensor, nn
from tqdm.auto import tqdm

#: Kept-energy fractions of the pointing game (the x-axis of the paper's Fig. 4).
DEFAULT_ENERGIES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

#: The paper's ablation scores on VGG16 / ImageNet (Table 1), for comparison tables.
PAPER_VGG16_ABLATION: dict[str, float] = {
    "Random": 0.0809,
    "Gradient": 0.3760,
    "GuidedBackprop": 0.4480,
    "LRP": 0.3713,
    "CLRP1": 0.3844,
    "CLRP2": 0.3913,
}

Reduce = Literal["sum", "abs"]
Method: TypeAlias = Attribution | Callable[[Tensor, Tensor], Tensor]


class RandomAttribution(Attribution):
    """Uniform random maps: the chance level of both evaluations (the paper's "Random").

    Its maximum is a uniformly random pixel, which is the paper's random ablation position.

    Args:
        forward_func: The model (kept for Captum's interface; not called).
        seed: Seed of the maps.
    """

    def __init__(self, forward_func: Callable, seed: int = 0) -> None:
        super().__init__(forward_func)
        self.generator = torch.Generator().manual_seed(seed)

    def attribute(self, inputs: Tensor, target: object = None, **kwargs: object) -> Tensor:
        """Random values in [0, 1) shaped like `inputs`; `target` is ignored."""
        del target, kwargs
        maps = torch.rand(inputs.shape, generator=self.generator, dtype=torch.float64)
        return maps.to(device=inputs.device, dtype=inputs.dtype)


def attribution_heatmap(attributions: Tensor, reduce: Reduce = "sum") -> Tensor:
    """One value per pixel: `[B, C, H, W]` maps summed over channels (`[B, H, W]` kept).

    Args:
        attributions: Maps `[B, C, H, W]` or `[B, H, W]`.
        reduce: `"sum"` adds the channels (relevance is additive), `"abs"` adds their
            absolute values (for signed gradients whose sign means nothing here).

    Returns:
        Tensor `[B, H, W]`.
    """
    if reduce not in ("sum", "abs"):
        raise ValueError(f"reduce must be 'sum' or 'abs', got {reduce!r}.")
    maps = attributions.detach()
    if reduce == "abs":
        maps = maps.abs()
    if maps.dim() == 4:
        return maps.sum(1)
    if maps.dim() == 3:
        return maps
    raise ValueError(f"expected maps [B, C, H, W] or [B, H, W], got shape {tuple(maps.shape)}.")


def energy_mask(heatmaps: Tensor, energy: float) -> Tensor:
    """The most relevant pixels that together hold `energy` of each map's positive energy.

    Negative values carry no energy (they are set to zero first). Pixels are taken in
    decreasing order until their sum reaches `energy` times the total; the pixel that
    crosses the threshold is kept. A map without positive values keeps nothing.

    Args:
        heatmaps: Tensor `[B, H, W]`.
        energy: Fraction in (0, 1].

    Returns:
        Bool tensor `[B, H, W]`.
    """
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must lie in (0, 1], got {energy}.")
    flat = heatmaps.detach().clamp(min=0).flatten(1).double()
    values, order = flat.sort(dim=1, descending=True)
    cumulative = values.cumsum(1)
    total = cumulative[:, -1:]
    # Pixels whose preceding cumulative energy is still below the threshold, so the one
    # that crosses it is in; the tolerance keeps energy=1 from failing on rounding.
    before = cumulative - values
    keep_sorted = (before < energy * total * (1 - 1e-12)) & (values > 0)
    keep = torch.zeros_like(keep_sorted).scatter_(1, order, keep_sorted)
    return keep.reshape(heatmaps.shape)


def box_masks(boxes: Tensor, height: int, width: int) -> Tensor:
    """Bool masks `[B, H, W]` of boxes `[B, 4]` given as `(x1, y1, x2, y2)`, ends inclusive.

    The box format of `torchvision.ops.masks_to_boxes`, so `box_masks(masks_to_boxes(m), H,
    W)` is the bounding box of each mask, the paper's ground truth.
    """
    boxes = boxes.round().long()
    rows = torch.arange(height, device=boxes.device)[None, :, None]
    cols = torch.arange(width, device=boxes.device)[None, None, :]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return (rows >= y1) & (rows <= y2) & (cols >= x1) & (cols <= x2)


def pointing_game(
    heatmaps: Tensor,
    masks: Tensor,
    energies: Sequence[float] = DEFAULT_ENERGIES,
    min_inside: float = 1.0,
) -> Tensor:
    """Hits of the energy-thresholded pointing game (Gu et al. 2018, Fig. 4).

    For each kept-energy fraction, the map is thresholded with `energy_mask`; a hit is
    counted when at least `min_inside` of the kept pixels lie in the object's mask (1.0:
    all of them, the paper's "the remaining foreground area lies in the bounding box"). A
    map that keeps nothing is a miss.

    Args:
        heatmaps: Tensor `[B, H, W]` (see `attribution_heatmap`).
        masks: Bool tensor `[B, H, W]`: the object's box or mask per image.
        energies: Kept-energy fractions.
        min_inside: Fraction of the kept pixels that must lie inside for a hit.

    Returns:
        Bool tensor `[n_energies, B]`; `.float().mean(1)` is the localisation accuracy.
    """
    if heatmaps.shape != masks.shape:
        raise ValueError(
            f"heatmaps {tuple(heatmaps.shape)} and masks {tuple(masks.shape)} must have the "
            "same [B, H, W] shape."
        )
    masks = masks.bool()
    hits = []
    for energy in energies:
        kept = energy_mask(heatmaps, energy)
        n_kept = kept.flatten(1).sum(1)
        n_inside = (kept & masks).flatten(1).sum(1)
        hits.append((n_kept > 0) & (n_inside >= min_inside * n_kept - 1e-9))
    return torch.stack(hits)


def _patch_box(center: Tensor, size: int, extent: int) -> tuple[Tensor, Tensor]:
    start = (center - size // 2).clamp(min=0)
    stop = (start + size).clamp(max=extent)
    start = (stop - size).clamp(min=0)
    return start, stop


def ablate_at_max(
    inputs: Tensor, heatmaps: Tensor, baseline: Tensor | float, patch_size: int
) -> Tensor:
    """Copies of `inputs` with a patch around each map's maximum replaced by `baseline`.

    The patch is `patch_size x patch_size` pixels, all channels, centred on the maximum
    (moved inward at the borders so that it keeps its size).

    Args:
        inputs: Images `[B, C, H, W]`.
        heatmaps: Maps `[B, H, W]`.
        baseline: Replacement values: the dataset's mean image `[C, H, W]` (the paper's
            choice), anything broadcastable to it, or a float.
        patch_size: Side of the ablated square in pixels.

    Returns:
        Tensor `[B, C, H, W]`.
    """
    if heatmaps.shape != inputs.shape[:1] + inputs.shape[2:]:
        raise ValueError(
            f"heatmaps {tuple(heatmaps.shape)} must be [B, H, W] of inputs {tuple(inputs.shape)}."
        )
    height, width = heatmaps.shape[1:]
    flat = heatmaps.detach().flatten(1).argmax(1)
    rows, cols = flat // width, flat % width
    r0, r1 = _patch_box(rows, patch_size, height)
    c0, c1 = _patch_box(cols, patch_size, width)
    r = torch.arange(height, device=inputs.device)[None, :, None]
    c = torch.arange(width, device=inputs.device)[None, None, :]
    inside = (
        (r >= r0[:, None, None])
        & (r < r1[:, None, None])
        & (c >= c0[:, None, None])
        & (c < c1[:, None, None])
    )
    base = torch.as_tensor(baseline, dtype=inputs.dtype, device=inputs.device)
    base = base.expand(inputs.shape[1:])
    return torch.where(inside[:, None], base, inputs)


@torch.no_grad()
def ablation_drop(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    heatmaps: Tensor,
    baseline: Tensor | float,
    patch_size: int,
) -> Tensor:
    """Drop of the target logit after ablating around each map's maximum (Gu et al. Table 1).

    Returns:
        Tensor `[B]`: `z_target(inputs) - z_target(ablated)`; the paper reports the mean.
    """
    ablated = ablate_at_max(inputs, heatmaps, baseline, patch_size)
    index = targets.reshape(-1, 1)
    before = model(inputs).gather(1, index)[:, 0]
    after = model(ablated).gather(1, index)[:, 0]
    return before - after


@dataclass(frozen=True)
class AttributionEvaluation:
    """Both scores of one attribution method on one data set.

    Attributes:
        energies: Kept-energy fractions of the pointing game.
        hits: Bool tensor `[n_energies, n_images]`.
        drops: Tensor `[n_images]` of target-logit drops after ablation.
    """

    energies: tuple[float, ...]
    hits: Tensor
    drops: Tensor

    @property
    def pointing_accuracy(self) -> Tensor:
        """Localisation accuracy per kept-energy fraction, Tensor `[n_energies]`."""
        return self.hits.float().mean(1)

    @property
    def ablation_score(self) -> float:
        """Mean drop of the target logit: the number of the paper's Table 1."""
        return float(self.drops.mean())


def _attribute(method: Method, inputs: Tensor, targets: Tensor, kwargs: Mapping) -> Tensor:
    if hasattr(method, "attribute"):
        maps = method.attribute(inputs, target=targets, **kwargs)
    else:
        maps = method(inputs, targets, **kwargs)
    if isinstance(maps, tuple):
        raise TypeError("the evaluation takes single-input methods (one map per image).")
    return maps.detach()


def evaluate_attribution(
    method: Method,
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    masks: Tensor,
    *,
    baseline: Tensor | float | None = None,
    energies: Sequence[float] = DEFAULT_ENERGIES,
    patch_size: int = 5,
    reduce: Reduce = "sum",
    min_inside: float = 1.0,
    batch_size: int = 64,
    attribute_kwargs: Mapping | None = None,
    show_progress: bool = False,
) -> AttributionEvaluation:
    """Pointing game and ablation score of one attribution method, explaining `targets`.

    Args:
        method: A Captum attribution object (Saliency, GuidedBackprop, LRP, ContrastiveLRP,
            RandomAttribution, ...) or a function `(inputs, targets) -> maps`.
        model: The classifier the maps explain (its logits are ablated).
        inputs: Images `[N, C, H, W]`.
        targets: Classes to explain `[N]`, normally the ground truth.
        masks: Bool `[N, H, W]`: each object's box (the paper) or mask.
        baseline: Ablation fill; None uses the mean image of `inputs`.
        energies: Kept-energy fractions of the pointing game.
        patch_size: Side of the ablated patch in pixels.
        reduce: How channels become one value per pixel (`attribution_heatmap`).
        min_inside: See `pointing_game`.
        batch_size: Images per call of the method.
        attribute_kwargs: Extra keyword arguments of `method.attribute`.
        show_progress: Show a progress bar over batches.

    Returns:
        AttributionEvaluation with per-image hits and drops.
    """
    if baseline is None:
        baseline = inputs.mean(0)
    kwargs = dict(attribute_kwargs or {})
    hits, drops = [], []
    starts = range(0, len(inputs), batch_size)
    for start in tqdm(starts, desc="evaluating", disable=not show_progress, leave=False):
        x = inputs[start : start + batch_size]
        t = targets[start : start + batch_size]
        heat = attribution_heatmap(_attribute(method, x, t, kwargs), reduce)
        hits.append(pointing_game(heat, masks[start : start + batch_size], energies, min_inside))
        drops.append(ablation_drop(model, x, t, heat, baseline, patch_size))
    return AttributionEvaluation(tuple(energies), torch.cat(hits, 1), torch.cat(drops))


def compare_attributions(
    methods: Mapping[str, Method],
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    masks: Tensor,
    reduce: Mapping[str, Reduce] | None = None,
    **kwargs: Any,
) -> dict[str, AttributionEvaluation]:
    """`evaluate_attribution` for several methods on the same images and ablation baseline.

    Args:
        methods: Name -> method.
        model: The classifier.
        inputs: Images `[N, C, H, W]`.
        targets: Classes to explain `[N]`.
        masks: Bool `[N, H, W]` boxes or masks of the objects.
        reduce: Optional per-method channel reduction (default `"sum"`).
        **kwargs: Passed on to `evaluate_attribution`.

    Returns:
        Name -> AttributionEvaluation, in the order of `methods`.
    """
    kwargs.setdefault("baseline", inputs.mean(0))
    return {
        name: evaluate_attribution(
            method,
            model,
            inputs,
            targets,
            masks,
            reduce=(reduce or {}).get(name, "sum"),
            **kwargs,
        )
        for name, method in methods.items()
    }


def format_comparison(
    results: Mapping[str, AttributionEvaluation],
    label: str = "ours",
    reference: Mapping[str, float] | None = None,
    reference_label: str = "VGG16 (paper)",
) -> str:
    """Markdown tables in the paper's format: methods as columns.

    The first table is the ablation score (Table 1), with a row of `reference` scores (e.g.
    `PAPER_VGG16_ABLATION`) for the methods it has; the second is the pointing-game
    accuracy per kept-energy fraction (the curves of Fig. 4 as numbers).
    """
    names = list(results)
    head = "| | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names) + "\n"
    ablation = "| ablation: " + label + " | "
    ablation += " | ".join(f"{results[n].ablation_score:.4f}" for n in names) + " |\n"
    if reference is not None:
        cells = [f"{reference[n]:.4f}" if n in reference else "" for n in names]
        ablation += f"| ablation: {reference_label} | " + " | ".join(cells) + " |\n"
    energies = next(iter(results.values())).energies
    pointing = ""
    for i, energy in enumerate(energies):
        cells = [f"{float(results[n].pointing_accuracy[i]):.3f}" for n in names]
        pointing += f"| pointing game, {energy:.0%} energy | " + " | ".join(cells) + " |\n"
    return head + ablation + "\n" + head + pointing
