"""LRP rules that Captum lacks, and the Deep Taylor rule set that Gu et al. (2018) use.

Captum's `LRP` only accepts modules that carry a `rule` or whose type has a default rule; it
rejects shape-only modules such as `nn.Flatten`, and it deletes every `rule` attribute after
each call. `attach_deep_taylor_rules` gives every leaf module the paper's rule (Montavon et
al. 2017, as in Gu et al. Sec. 3.1) right before a call and returns what it attached, so that
the caller can take the rules off again in a `finally`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeAlias

import torch
import torch.nn.functional as F
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, PropagationRule
from torch import Tensor, nn

# The modules whose weights the z^B and z+ rules redistribute over.
_LinearMap: TypeAlias = nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d

#: Leaf modules that only move or copy values: relevance passes through them unchanged.
PASS_THROUGH = (nn.Flatten, nn.Unflatten, nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d)
#: Linear maps whose relevance follows the z+ rule (z^B for the first one, given bounds).
LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Pooling: max-pooling sends all relevance to the maximum (winner takes all), average
#: pooling in proportion to the activations; both are what `EpsilonRule` does on them.
POOLING = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
)
#: Handled by Captum itself (relevance passes through the activation unchanged).
CAPTUM_NON_LINEAR = (nn.ReLU, nn.Dropout, nn.Tanh)


def _store_input_relevance(rule: PropagationRule, grad: Tensor, relevance: Tensor) -> None:
    """Records the input relevance as Captum's own rules do, and hands it to a preceding ReLU.

    Captum's activation hook reads `grad.replace_out` to pass the relevance on; without it a
    ReLU in front of this module would forward the raw gradient instead.
    """
    if rule._has_single_input:
        rule.relevance_input[grad.device] = relevance.data
    else:
        rule.relevance_input[grad.device].append(relevance.data)
    grad.replace_out = relevance  # type: ignore[attr-defined]


class PassThroughRule(EpsilonRule):
    """Identity rule for shape-only modules (`nn.Flatten`, `nn.Unflatten`, `nn.Identity`).

    Captum's `IdentityRule` returns the output relevance as it is, which fails when the module
    changes the shape (Flatten) and does not hand the relevance to a preceding ReLU. This rule
    reshapes the output relevance to the input's shape and does both. On batch-norm it
    bypasses the layer, as Gu et al. do ("normalization layers are bypassed").
    """

    def _create_backward_hook_input(self, inputs: Tensor) -> Callable[[Tensor], Tensor]:
        shape = inputs.shape

        def _backward_hook_input(grad: Tensor) -> Tensor:
            relevance = self.relevance_output[grad.device].reshape(shape)
            _store_input_relevance(self, grad, relevance)
            return relevance

        return _backward_hook_input


def _linear_map(module: _LinearMap, x: Tensor, weight: Tensor) -> Tensor:
    """The module's linear map with another weight and no bias."""
    if isinstance(module, nn.Linear):
        return F.linear(x, weight)
    return module._conv_forward(x, weight, None)


class ZBoxRule(PropagationRule):
    """The z^B rule of Deep Taylor decomposition for the first layer (inputs in a box).

    For an input bounded by `low <= x <= high` it redistributes the relevance `R_j` of an
    output as `R_i = sum_j (x_i w_ij - l_i w_ij^+ - h_i w_ij^-) / z_j * R_j` with
    `z_j = sum_i (x_i w_ij - l_i w_ij^+ - h_i w_ij^-)` (Montavon et al. 2017, Eq. 18); the bias
    is left out, as Gu et al. do. Works on `nn.Linear` and `nn.ConvNd`.

    Args:
        low: Lowest input value: a float, or a tensor broadcastable to one input example
            (e.g. `[C, 1, 1]` per-channel bounds of normalised images).
        high: Highest input value, same forms.
    """

    def __init__(self, low: float | Tensor, high: float | Tensor) -> None:
        self.low = low
        self.high = high

    def _manipulate_weights(self, module: nn.Module, inputs: object, outputs: object) -> None:
        pass

    def forward_hook(
        self, module: _LinearMap, inputs: tuple[Tensor, ...] | Tensor, outputs: Tensor
    ) -> Tensor:
        """Keeps the module and its input for the backward hooks, then defers to Captum."""
        self._module = module
        self._x = (inputs[0] if isinstance(inputs, tuple) else inputs).data
        return super().forward_hook(module, inputs, outputs)

    def _bounds(self) -> tuple[Tensor, Tensor]:
        x = self._x
        low = torch.as_tensor(self.low, dtype=x.dtype, device=x.device).expand_as(x)
        high = torch.as_tensor(self.high, dtype=x.dtype, device=x.device).expand_as(x)
        return low, high

    def _create_backward_hook_output(self, outputs: Tensor) -> Callable[[Tensor], Tensor]:
        def _backward_hook_output(grad: Tensor) -> Tensor:
            w = self._module.weight.detach()
            low, high = self._bounds()
            z = (
                _linear_map(self._module, self._x, w)
                - _linear_map(self._module, low, w.clamp(min=0))
                - _linear_map(self._module, high, w.clamp(max=0))
            )
            sign = torch.sign(z)
            sign[sign == 0] = 1
            self.relevance_output[grad.device] = grad.data
            self._s = grad / (z + sign * self.STABILITY_FACTOR)
            return self._s

        return _backward_hook_output

    def _create_backward_hook_input(self, inputs: Tensor) -> Callable[[Tensor], Tensor]:
        def _backward_hook_input(grad: Tensor) -> Tensor:
            # `grad` is W^T s (autograd through the module); the two bound terms need
            # W+^T s and W-^T s, the vector-Jacobian products of the same map.
            w = self._module.weight.detach()
            low, high = self._bounds()
            with torch.enable_grad():
                lo = low.clone().requires_grad_(True)
                hi = high.clone().requires_grad_(True)
                g_low, g_high = torch.autograd.grad(
                    (
                        _linear_map(self._module, lo, w.clamp(min=0)),
                        _linear_map(self._module, hi, w.clamp(max=0)),
                    ),
                    (lo, hi),
                    (self._s, self._s),
                )
            relevance = inputs * grad - low * g_low - high * g_high
            _store_input_relevance(self, grad, relevance)
            return relevance

        return _backward_hook_input


def leaf_modules(model: nn.Module) -> list[nn.Module]:
    """The leaves that Captum's LRP visits (modules without children), in definition order."""
    leaves: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if next(child.children(), None) is None:
                leaves.append(child)
            else:
                visit(child)

    visit(model)
    return leaves


def deep_taylor_rule(
    module: nn.Module, first: bool, input_bounds: tuple[float | Tensor, float | Tensor] | None
) -> PropagationRule | None:
    """The rule Gu et al. use for one leaf module, or None where Captum handles it.

    Args:
        module: A leaf module.
        first: Whether it is the first linear map of the forward pass.
        input_bounds: `(low, high)` of the input domain, or None; with bounds the first
            linear map gets the z^B rule, otherwise z+ like the others.

    Raises:
        TypeError: The module has no rule here; the message says how to give it one.
    """
    if isinstance(module, LINEAR):
        if first and input_bounds is not None:
            return ZBoxRule(*input_bounds)
        return Alpha1_Beta0_Rule(set_bias_to_zero=True)
    if isinstance(module, POOLING):
        return EpsilonRule()
    if isinstance(module, PASS_THROUGH):
        return PassThroughRule()
    if type(module) in CAPTUM_NON_LINEAR:
        return None
    raise TypeError(
        f"LRP has no propagation rule for a module of type {type(module).__name__} ({module}). "
        "Set one on it before building the explainer, e.g. "
        "`module.rule = captum.attr._utils.lrp_rules.EpsilonRule()`; it is re-attached on "
        "every call."
    )


def attach_deep_taylor_rules(
    modules: Iterable[nn.Module],
    first: nn.Module | None,
    input_bounds: tuple[float | Tensor, float | Tensor] | None,
    user_rules: dict[nn.Module, PropagationRule],
) -> list[nn.Module]:
    """Sets `module.rule` on every leaf: the user's own where given, else the paper's.

    Returns:
        The modules that received a rule (for removal in a `finally`).
    """
    # Every rule is chosen before any is set, so an unsupported module leaves nothing behind.
    chosen = []
    for module in modules:
        rule = user_rules.get(module)
        if rule is None:
            rule = deep_taylor_rule(module, module is first, input_bounds)
        chosen.append((module, rule))
    attached = []
    for module, rule in chosen:
        if hasattr(module, "rule") and module.rule is None:
            # Left behind by a Captum LRP call that failed half-way; Captum would trip on it.
            del module.rule
        if rule is not None:
            module.rule = rule
            attached.append(module)
    return attached
