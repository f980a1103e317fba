"""Gram matrices, the normalised texture / content losses and the L-BFGS synthesis loop."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from ._features import GramFeatures

_EPS = 1e-12
MAX_STEP = 0.1
HISTORY = 20


def gram(features: Tensor, weight: Tensor | None = None) -> Tensor:
    """Gram matrices `[N, C, C]` of feature maps `[N, C, H, W]`, averaged over positions.

    Args:
        features: Feature maps.
        weight: Optional `[N, 1, H, W]` weights of the positions (a soft object mask): the
            Gram matrix of the weighted region, `Σ_p w_p f_p f_pᵀ / Σ_p w_p`.
    """
    flat = features.flatten(2)
    if weight is None:
        return flat @ flat.transpose(1, 2) / flat.shape[-1]
    w = weight.flatten(2)
    return (flat * w) @ flat.transpose(1, 2) / w.sum(-1, keepdim=True).clamp_min(_EPS)


def _weights(fg: Tensor | None, size: torch.Size) -> Tensor | None:
    """The foreground `[N, 1, H, W]` resampled to a feature map's size (area averages)."""
    if fg is None:
        return None
    return F.interpolate(fg, size=tuple(size), mode="area")


def target_grams(features: GramFeatures, image: Tensor) -> dict[str, Tensor]:
    """Gram matrices `{layer: [1, C, C]}` of a texture or style image `[1, 3, H, W]`."""
    with torch.no_grad():
        maps = features(image)
    return {k: gram(maps[k]) for k in features.style_layers if k in maps}


def gram_loss(maps: dict[str, Tensor], targets: dict[str, Tensor], fg: Tensor | None) -> Tensor:
    """`mean_l ||G_l - T_l||² / ||T_l||²` per image `[N]`: each layer's relative Gram error.

    Normalising per layer gives every layer the same say (He et al. 2016) and makes the
    loss 1 for an image whose Gram matrices are all zero.
    """
    terms = []
    for layer, target in targets.items():
        if layer in maps:
            g = gram(maps[layer], _weights(fg, maps[layer].shape[-2:]))
            diff = (g - target).pow(2).sum((1, 2))
            terms.append(diff / target.pow(2).sum((1, 2)).clamp_min(_EPS))
    return torch.stack(terms).mean(0)


def content_loss(
    maps: dict[str, Tensor], targets: dict[str, Tensor], fg: Tensor | None = None
) -> Tensor:
    """`mean_l ||F_l - C_l||² / ||C_l||²` per image `[N]` (over the foreground, if given)."""
    terms = []
    for layer, target in targets.items():
        if layer in maps:
            w = _weights(fg, target.shape[-2:])
            w = torch.ones_like(target[:, :1]) if w is None else w
            diff = ((maps[layer] - target).pow(2) * w).sum((1, 2, 3))
            terms.append(diff / (target.pow(2) * w).sum((1, 2, 3)).clamp_min(_EPS))
    return torch.stack(terms).mean(0)


def rgb(images: Tensor) -> Tensor:
    """Grayscale `[N, 1, H, W]` repeated to three channels for the feature extractor."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def total_variation(x: Tensor) -> Tensor:
    """Mean squared difference of neighbouring pixels, per image `[N]`."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


@dataclass(frozen=True)
class Objective:
    """A weighted synthesis loss: `w_c · content + w_g · Gram (+ w_tv · TV)`.

    Attributes:
        content_weight: Weight of the content loss (0: texture synthesis only).
        gram_weight: Weight of the Gram loss.
        tv_weight: Weight of the total-variation smoothness term.
    """

    content_weight: float
    gram_weight: float
    tv_weight: float = 0.0


def synthesise(
    content: Tensor,
    grams: dict[str, Tensor],
    features: GramFeatures,
    objective: Objective,
    steps: Iterable[int],
    fg: Tensor | None = None,
    surround: Tensor | None = None,
    show_progress: bool = False,
    desc: str = "synthesis",
    max_step: float = MAX_STEP,
) -> dict[int, Tensor]:
    """Optimises an image from `content` under `objective` with projected L-BFGS.

    One gradient evaluation per step, so step k of a long run is exactly step k of a short
    one: snapshots at several step counts cost one run. Pixels stay in [0, 1]; outside the
    foreground they stay the content's, and the result inside does not depend on them.

    Args:
        content: Image `[1, C, H, W]`, float in [0, 1], C in {1, 3}.
        grams: Target Gram matrices from `target_grams`.
        features: The feature extractor the targets came from.
        objective: The loss weights.
        steps: Step counts at which to return the image (0: the content itself).
        fg: Optional foreground `[1, 1, H, W]` (float 0/1): only it changes, and the losses
            are taken over it, with the object pasted on `surround` (when given).
        surround: `[1, 3, H, W]` shown around the object while optimising (the reference
            image itself, so the object's outline does not pull towards its background).
        show_progress: Show a tqdm bar.
        desc: The bar's label.
        max_step: Largest change of any pixel in one step.

    Returns:
        `{step: image [1, C, H, W]}` for every requested step count.
    """
    wanted = sorted(set(steps))
    keep = None if fg is None else fg > 0

    def canvas(x: Tensor) -> Tensor:
        # the object pasted on the reference: receptive fields that cross the object's
        # outline see texture outside it, not the real background
        if keep is None or surround is None:
            return rgb(x)
        return torch.where(keep, rgb(x), surround)

    with torch.no_grad():
        content_maps = features(canvas(content))
    content_targets = {k: content_maps[k] for k in features.content_layers if k in content_maps}

    def loss_of(x: Tensor) -> Tensor:
        image = canvas(x)
        maps = features(image)
        loss = objective.gram_weight * gram_loss(maps, grams, fg)
        if objective.content_weight:
            loss = loss + objective.content_weight * content_loss(maps, content_targets, fg)
        if objective.tv_weight:
            loss = loss + objective.tv_weight * total_variation(image)
        return loss.sum()

    out = {0: content.clone()} if 0 in wanted else {}
    last = wanted[-1] if wanted else 0
    solver = _ProjectedLBFGS(loss_of, content, max_step)
    for step in tqdm(range(1, last + 1), desc=desc, disable=not show_progress, leave=False):
        solver.step()
        if step in wanted:
            out[step] = solver.x.clone()
    if keep is not None:
        out = {k: torch.where(keep, v, content) for k, v in out.items()}
    return out


class _ProjectedLBFGS:
    """L-BFGS (two-loop recursion, Nocedal & Wright Alg. 7.4) on pixels in [0, 1].

    Each step moves along the quasi-Newton direction, shortened so that no pixel changes
    by more than `max_step`, and clips to [0, 1]; the curvature pair is the step actually
    taken. No line search: one loss and gradient per step. The cap matters for the first
    step (plain gradient descent, whose scale is arbitrary) and keeps pixels off the clip
    bounds, where a flat patch would give ReLU features no gradient.
    """

    def __init__(self, loss_of, x0: Tensor, max_step: float) -> None:
        self.loss_of, self.max_step = loss_of, max_step
        self.x = x0.detach().clone()
        self.history: list[tuple[Tensor, Tensor, Tensor]] = []
        self.loss, self.grad = self._evaluate(self.x)

    def _evaluate(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self.loss_of(x)
            (grad,) = torch.autograd.grad(loss, x)
        return loss.detach(), grad

    def _direction(self) -> Tensor:
        q, alphas = self.grad.clone(), []
        for s, y, rho in reversed(self.history):
            alpha = rho * (s * q).sum()
            q -= alpha * y
            alphas.append(alpha)
        if self.history:
            s, y, _ = self.history[-1]
            q *= (s * y).sum() / (y * y).sum()
        for (s, y, rho), alpha in zip(self.history, reversed(alphas), strict=True):
            q += s * (alpha - rho * (y * q).sum())
        return -q

    def step(self) -> None:
        """One L-BFGS step; no-op once the gradient vanishes."""
        d = self._direction()
        largest = d.abs().max()
        if not largest > 0:
            return
        d *= min(1.0, self.max_step / float(largest)) if self.history else self.max_step / largest
        x = (self.x + d).clamp(0, 1)
        loss, grad = self._evaluate(x)
        s, y = x - self.x, grad - self.grad
        sy = (s * y).sum()
        if sy > 1e-10 * (y * y).sum().sqrt() * (s * s).sum().sqrt():
            self.history = [*self.history[-(HISTORY - 1) :], (s, y, 1.0 / sy)]
        self.x, self.loss, self.grad = x, loss, grad
