"""Blocks of parameters that share one Hessian block, and the scopes that define them.

The bottom of `influence/`: it imports nothing else from the package's influence modules,
so every other module (strategies, scoring, the store) can name a `Block` or a `Scope`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from torch import nn

from .._utils.modules import layer_parameter_names


class Scope(str, Enum):
    """What a score is taken over: one block per selected layer, or one global block.

    A `str` enum, so that `Scope.GLOBAL == "<global>"` (the global block's name).
    """

    LAYERS = "layers"
    """One block per selected layer (paper Eq. 3; its sum is the compound score, Eq. 7)."""
    GLOBAL = "<global>"
    """One block of all trainable parameters, with the full Hessian (paper Eq. 5)."""


@dataclass(frozen=True)
class Block:
    """A set of parameters that shares one Hessian block.

    Attributes:
        name: Layer name (dotted, "" for a model that is one layer) or "<global>".
        layers: Module names the block covers (None: the whole model).
        param_names: Names as in `model.named_parameters()`.
        numel: Number of scalar parameters, P.
    """

    name: str
    layers: tuple[str, ...] | None
    param_names: tuple[str, ...]
    numel: int


def scope_blocks(model: nn.Module, scope: Scope, layer_names: Sequence[str]) -> list[Block]:
    """The blocks of a scope: one per layer of `layer_names`, or one of all parameters.

    A block holds its trainable parameters, or all of its parameters when none is
    trainable (a frozen layer that was named explicitly).
    """
    params = dict(model.named_parameters())
    if Scope(scope) is Scope.GLOBAL:
        names = [n for n, p in params.items() if p.requires_grad] or list(params)
        size = sum(params[n].numel() for n in names)
        return [Block(Scope.GLOBAL.value, None, tuple(names), size)]
    blocks = []
    for layer in layer_names:
        own = layer_parameter_names(model, layer)
        names = [n for n in own if params[n].requires_grad] or own
        blocks.append(Block(layer, (layer,), tuple(names), sum(params[n].numel() for n in names)))
    return blocks
