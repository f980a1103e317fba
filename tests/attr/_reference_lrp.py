"""Deep Taylor LRP and CLRP written out layer by layer, as in the authors' code.

Only for `nn.Sequential` models of Conv2d / Linear / ReLU / MaxPool2d / Flatten: the plain
algorithm (z^B on the first linear map, z+ without bias on the others, winner-takes-all
max-pooling) against which the Captum-based classes are checked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EPS = 1e-9


def _apply(layer: nn.Module, x: Tensor, weight: Tensor) -> Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight)
    return F.conv2d(x, weight, None, layer.stride, layer.padding)


def reference_relevance(
    model: nn.Sequential,
    x: Tensor,
    start: Tensor,
    bounds: tuple[float, float],
    negate_last: bool = False,
) -> Tensor:
    """Relevance of the input when the logits start with relevance `start` `[B, C]`.

    `negate_last` negates the output layer's weights (CLRP2's dual concept).
    """
    activations = [x]
    with torch.no_grad():
        for layer in model:
            activations.append(layer(activations[-1]))
    linear = [i for i, layer in enumerate(model) if isinstance(layer, (nn.Linear, nn.Conv2d))]
    relevance = start
    for i in reversed(range(len(model))):
        layer, a = model[i], activations[i].detach()
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            w = layer.weight.detach()
            if negate_last and i == linear[-1]:
                w = -w
            inp = a.clone().requires_grad_(True)
            if i == linear[0]:
                low = torch.full_like(a, bounds[0]).requires_grad_(True)
                high = torch.full_like(a, bounds[1]).requires_grad_(True)
                z = (
                    _apply(layer, inp, w)
                    - _apply(layer, low, w.clamp(min=0))
                    - _apply(layer, high, w.clamp(max=0))
                )
                s = relevance / (z + EPS)
                g_x, g_low, g_high = torch.autograd.grad(z, (inp, low, high), s)
                relevance = a * g_x + low.detach() * g_low + high.detach() * g_high
            else:
                z = _apply(layer, inp, w.clamp(min=0)) + EPS
                (g,) = torch.autograd.grad(z, inp, relevance / z)
                relevance = a * g
        elif isinstance(layer, nn.MaxPool2d):
            inp = a.clone().requires_grad_(True)
            (relevance,) = torch.autograd.grad(layer(inp), inp, relevance)
        elif isinstance(layer, nn.Flatten):
            relevance = relevance.reshape(a.shape)
        elif not isinstance(layer, nn.ReLU):
            raise TypeError(f"no reference rule for {layer}")
    return relevance


def reference_lrp(model, x, targets, bounds):
    """LRP of `targets`, starting from their logits."""
    with torch.no_grad():
        logits = model(x)
    start = torch.zeros_like(logits).scatter_(
        1, targets[:, None], logits.gather(1, targets[:, None])
    )
    return reference_relevance(model, x, start, bounds)


def reference_clrp(model, x, targets, bounds, variant, dual_weights="uniform"):
    """CLRP as Eq. 2 with both maps normalised by their sums (the authors' code)."""
    with torch.no_grad():
        logits = model(x)
    one_hot = torch.zeros_like(logits).scatter_(1, targets[:, None], 1.0)
    score = logits.gather(1, targets[:, None]).abs()
    target_map = reference_relevance(model, x, one_hot * score, bounds)
    if variant == "clrp2":
        dual_map = reference_relevance(model, x, one_hot * score, bounds, negate_last=True)
    else:
        others = 1 - one_hot
        weights = others * logits.abs() if dual_weights == "scores" else others
        dual_map = reference_relevance(model, x, weights, bounds)

    def normalised(r):
        return r / r.flatten(1).sum(1).reshape(-1, 1, 1, 1)

    return (normalised(target_map) - normalised(dual_map)).clamp(min=0)
