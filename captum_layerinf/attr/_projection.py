"""Layer outputs of a model and DeconvNet projections of chosen units to the input."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from captum.attr import Deconvolution
from torch import Tensor, nn


class _Stop(Exception):
    """Raised by a forward hook to end the forward pass once the layer has run."""


def layer_output(model: nn.Module, layer: nn.Module, inputs: Tensor) -> Tensor:
    """The output of `layer` (its first call) when `model` runs on `inputs`.

    The forward pass stops right after the layer: later modules never run, so an in-place
    operation after the layer cannot change the returned tensor. Keeps the graph when
    grad is enabled.
    """
    box: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: object, out: Tensor) -> None:
        box.append(out[0] if isinstance(out, tuple) else out)
        raise _Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(inputs)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not box:
        raise RuntimeError(f"the layer {type(layer).__name__} was not called by the forward pass.")
    return box[0]


@torch.no_grad()
def layer_outputs(
    model: nn.Module, layers: dict[str, nn.Module], inputs: Tensor, batch_size: int
) -> dict[str, Tensor]:
    """Detached outputs `[n, *unit_shape]` of several layers, in batches of `batch_size`."""
    chunks: dict[str, list[Tensor]] = {name: [] for name in layers}
    handles = []

    def keep(name: str):
        def hook(_module: nn.Module, _inputs: object, out: Tensor) -> None:
            out = out[0] if isinstance(out, tuple) else out
            if len(chunks[name]) < n_batches[0]:  # first call only
                chunks[name].append(out.detach().clone())  # clone: in-place ops follow

        return hook

    n_batches = [0]
    try:
        for name, module in layers.items():
            handles.append(module.register_forward_hook(keep(name)))
        for start in range(0, inputs.shape[0], batch_size):
            n_batches[0] += 1
            model(inputs[start : start + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    missing = [name for name, c in chunks.items() if len(c) != n_batches[0]]
    if missing:
        raise RuntimeError(f"layers {missing} were not called by the model's forward pass.")
    return {name: torch.cat(c) for name, c in chunks.items()}


class _SeededLayer(nn.Module):
    """`Σ_u seed_u · a_u(x)`: the layer's output dotted with a seed, one scalar per example.

    Backpropagating this scalar from the layer sends exactly `seed` into the layer's
    output gradient: with Captum's `Deconvolution` hooks on the model's ReLUs, that is
    DeconvNet started from the seeded units only (Zeiler & Fergus 2014: every other
    activation of the layer set to zero).
    """

    def __init__(self, model: nn.Module, layer: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: Tensor, seed: Tensor) -> Tensor:
        out = layer_output(self.model, self.layer, x)
        return (out * seed).flatten(1).sum(1, keepdim=True)


def deconv_projection(model: nn.Module, layer: nn.Module, inputs: Tensor, seeds: Tensor) -> Tensor:
    """DeconvNet image of `seeds` placed in `layer`'s output, one seed per input row.

    Args:
        model: The network (its ReLUs must be `nn.ReLU` modules, as Captum requires).
        layer: The module whose output is seeded.
        inputs: `[n, *input_shape]`.
        seeds: `[n, *unit_shape]`: the gradient sent into the layer's output.

    Returns:
        `Tensor [n, *input_shape]`.
    """
    wrapped = _SeededLayer(model, layer)
    with warnings.catch_warnings():
        # Captum announces its (always removed) ReLU hooks on every call.
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        out = Deconvolution(wrapped).attribute(
            inputs.detach().clone().requires_grad_(True),
            target=0,
            additional_forward_args=(seeds.to(inputs.dtype),),
        )
    return out.detach()


def unit_seeds(
    activations: Tensor, units: Tensor, seed: str, joint: bool
) -> tuple[Tensor, Sequence[int]]:
    """Seeds for DeconvNet: one per (input, unit), or one per input with all its units.

    Args:
        activations: `[n, *unit_shape]` layer outputs of the inputs.
        units: `[n, k]` flat unit indices.
        seed: "activation" (the unit's raw value, as DeconvNet and Ho do) or "one".
        joint: One seed per input holding all k units (Ho's masked top-k) instead of k seeds.

    Returns:
        The seeds `[n·k or n, *unit_shape]` and, per seed, the row of its input.
    """
    n, k = units.shape
    flat = activations.flatten(1)
    values = (
        flat.gather(1, units) if seed == "activation" else torch.ones_like(units, dtype=flat.dtype)
    )
    if joint:
        seeds = torch.zeros_like(flat).scatter_(1, units, values)
        rows = list(range(n))
    else:
        seeds = torch.zeros(n * k, flat.shape[1], dtype=flat.dtype, device=flat.device)
        seeds[torch.arange(n * k, device=flat.device), units.reshape(-1)] = values.reshape(-1)
        rows = [i for i in range(n) for _ in range(k)]
    return seeds.view(-1, *activations.shape[1:]), rows
