"""Contrastive LRP (Gu, Yang & Tresp 2018) on Captum's LRP, and LRP with the paper's rules."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from captum._utils.common import (
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _is_tuple,
)
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric
from captum.attr import LRP
from captum.attr._utils.attribution import GradientAttribution
from captum.attr._utils.lrp_rules import EpsilonRule, PropagationRule
from torch import Tensor, nn

from .._utils.tensors import tensor_sum
from ._lrp_rules import LINEAR, _store_input_relevance, attach_deep_taylor_rules, leaf_modules

Variant = Literal["clrp1", "clrp2"]
DualWeights = Literal["uniform", "scores"]
Bounds = tuple[float | Tensor, float | Tensor]


@dataclass
class _Layout:
    """What one plain forward pass tells about the model."""

    first: nn.Module | None  # first linear map called (gets z^B with input bounds)
    producer: str | None  # dotted name of the leaf whose output the model returns
    logits: Tensor


def _forward_layout(model: nn.Module, inputs: tuple[Tensor, ...], args: tuple) -> _Layout:
    names = {module: name for name, module in model.named_modules()}
    calls: list[nn.Module] = []
    last: list[tuple[nn.Module, object]] = []

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        calls.append(module)
        last[:] = [(module, output)]

    handles = [leaf.register_forward_hook(record) for leaf in leaf_modules(model)]
    try:
        with torch.no_grad():
            out = model(*inputs, *args)
    finally:
        for handle in handles:
            handle.remove()
    first = next((m for m in calls if isinstance(m, LINEAR)), None)
    producer = names[last[0][0]] if last and last[0][1] is out else None
    return _Layout(first, producer, out)


class DeepTaylorLRP(LRP):
    """Captum's LRP with the rules Gu et al. use, attached afresh on every call.

    The rule set is that of Deep Taylor decomposition (Montavon et al. 2017; Gu et al. 2018,
    Sec. 3.1): z^B on the first linear map when the input domain `input_bounds` is given (z+
    otherwise), z+ without bias (`Alpha1_Beta0_Rule(set_bias_to_zero=True)`) on every other
    `Linear` / `ConvNd`, winner-takes-all on max-pooling, proportional to the activations on
    average pooling (the paper spreads it evenly), and an identity rule on shape-only modules
    (`Flatten`, `Unflatten`, `Identity`) and on batch-norm, which the paper bypasses.
    Captum's own `LRP` rejects `nn.Flatten` and deletes every `rule` attribute after a call;
    this class re-attaches the rules before each call, keeping any `module.rule` the user set
    before building it.

    Args:
        model: A network of ReLU, pooling, linear and convolutional leaf modules. Each module
            must be called once per forward pass (Captum's requirement).
        input_bounds: `(low, high)` of the input values, e.g. `(0.0, 1.0)` for images in
            [0, 1], or per-channel tensors `[C, 1, 1]`; None applies z+ to the first layer too.

    Examples:
        >>> lrp = DeepTaylorLRP(model, input_bounds=(0.0, 1.0))
        >>> relevance = lrp.attribute(images, target=labels)   # same shape as images
    """

    def __init__(self, model: nn.Module, input_bounds: Bounds | None = None) -> None:
        super().__init__(model)
        self.input_bounds = input_bounds
        self._user_rules: dict[nn.Module, PropagationRule] = {
            module: module.rule
            for module in model.modules()
            if isinstance(getattr(module, "rule", None), PropagationRule)
        }

    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: object = None,
        return_convergence_delta: bool = False,
        verbose: bool = False,
    ) -> TensorOrTupleOfTensorsGeneric | tuple[TensorOrTupleOfTensorsGeneric, Tensor]:
        """Relevance of `target` for each input element, as Captum's `LRP.attribute`.

        Captum's docstring calls the values normalised to sum 1, but its code multiplies
        them by the target score: they sum to the target's logit (z+ and z^B conserve
        relevance exactly; tested).

        Returns:
            Tensor (or tuple) shaped like `inputs`; with `return_convergence_delta`, also
            `Tensor [batch]` of target score minus total relevance.
        """
        input_tuple = _format_tensor_into_tuples(inputs)
        args = _format_additional_forward_args(additional_forward_args) or ()
        first = _forward_layout(self.model, input_tuple, args).first
        with self._rules(first):
            return super().attribute(
                inputs,
                target,
                additional_forward_args,
                return_convergence_delta=return_convergence_delta,
                verbose=verbose,
            )

    @contextlib.contextmanager
    def _rules(
        self, first: nn.Module | None, extra: dict[nn.Module, PropagationRule] | None = None
    ) -> Iterator[None]:
        rules = {**self._user_rules, **(extra or {})}
        attached = []
        try:
            attached = attach_deep_taylor_rules(
                leaf_modules(self.model), first, self.input_bounds, rules
            )
            yield
        finally:
            # Captum removes the rules itself, except when it fails before its own cleanup.
            for module in attached:
                if hasattr(module, "rule"):
                    del module.rule


class _OthersDual(nn.Module):
    """Appends CLRP1's dual class to the logits; `_ShareRule` hands its relevance on.

    The dual's score is `d = sum_{k != target} |z_k|` (the authors' code). Its relevance goes
    to the other logits in the shares `self.shares` (`[batch, C]`, zero at the target, rows
    summing to 1) that the forward pass computes: equal shares (the paper: "the score of the
    target class is uniformly redistributed to other classes") or `|z_k| / d` (the code).
    """

    def __init__(self, targets: Tensor, weights: DualWeights) -> None:
        super().__init__()
        self.targets = targets
        self.weights = weights
        self.shares: Tensor | None = None

    def forward(self, logits: Tensor) -> Tensor:
        """`[batch, C]` logits -> `[batch, C + 1]`, the dual score last."""
        others = torch.ones_like(logits).scatter_(1, self.targets[:, None], 0.0)
        magnitude = logits.abs() * others
        shares = others if self.weights == "uniform" else magnitude
        self.shares = (shares / shares.sum(1, keepdim=True)).detach()
        return torch.cat([logits, magnitude.sum(1, keepdim=True)], dim=1)


class _ShareRule(EpsilonRule):
    """Relevance of `_OthersDual`: the logits keep theirs, the dual's is split by shares."""

    def forward_hook(self, module: nn.Module, inputs: object, outputs: Tensor) -> Tensor:
        """Keeps the module to read its shares in the backward pass."""
        self._module = module
        return super().forward_hook(module, inputs, outputs)

    def _create_backward_hook_input(self, inputs: Tensor) -> Callable[[Tensor], Tensor]:
        def _backward_hook_input(grad: Tensor) -> Tensor:
            out = self.relevance_output[grad.device]
            relevance = out[:, :-1] + out[:, -1:] * self._module.shares
            _store_input_relevance(self, grad, relevance)
            return relevance

        return _backward_hook_input


def _negated_dual(linear: nn.Linear) -> nn.Linear:
    """`linear` with the negated rows appended: output `C + k` is CLRP2's dual of class `k`."""
    dual = nn.Linear(linear.in_features, 2 * linear.out_features, bias=linear.bias is not None)
    dual = dual.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        dual.weight.copy_(torch.cat([linear.weight, -linear.weight]))
        if linear.bias is not None:
            dual.bias.copy_(torch.cat([linear.bias, -linear.bias]))
    return dual


@contextlib.contextmanager
def _swapped(model: nn.Module, name: str, replacement: nn.Module) -> Iterator[None]:
    """Puts `replacement` at `model.<name>` for the duration; the original comes back after."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    original = parent._modules[child]
    parent._modules[child] = replacement
    try:
        yield
    finally:
        parent._modules[child] = original


def _target_vector(target: TargetType, batch: int, device: torch.device) -> Tensor:
    if target is None:
        raise ValueError(
            "ContrastiveLRP needs the class to explain: pass target=<int>, a list of ints or "
            "a 1-D tensor with one class per example."
        )
    if isinstance(target, tuple):
        raise TypeError(
            "ContrastiveLRP explains classifiers with [batch, classes] outputs; "
            f"got a tuple target {target}."
        )
    t = torch.as_tensor(target, device=device).long().reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise ValueError(f"target has {t.numel()} entries for a batch of {batch} examples.")
    return t.contiguous()


def _per_example_sum(maps: tuple[Tensor, ...]) -> Tensor:
    return tensor_sum(m.flatten(1).sum(1) for m in maps)


def _normalised(maps: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    total = _per_example_sum(maps)
    # A map without any relevance stays zero instead of turning into NaN.
    total = torch.where(total == 0, torch.full_like(total, float("inf")), total)
    return tuple(m / total.reshape((-1,) + (1,) * (m.dim() - 1)) for m in maps)


class ContrastiveLRP(GradientAttribution):
    """Contrastive Layer-wise Relevance Propagation (CLRP, Gu, Yang & Tresp 2018).

    LRP maps of one image hardly change with the class they explain (the ReLU masks and
    pooling switches decide them). CLRP explains the target class *against* a dual virtual
    class and keeps what is specific to the target (the paper's Eq. 2):

        CLRP(x) = max(0, R_target / sum R_target - R_dual / sum R_dual)

    - `"clrp1"`: the dual class is all other classes; the target's score is spread over them
      equally (the paper's text, `dual_weights="uniform"`) or in proportion to `|z_k|` (the
      authors' code, `dual_weights="scores"`).
    - `"clrp2"`: the dual class is the target's output neuron with its weights negated, so the
      z+ rule of the last layer follows the target's *negative* weights.

    Both maps come from `DeepTaylorLRP` (the paper's rules) and are normalised by their total
    relevance, which by LRP's conservation is the starting score (the paper relies on that
    instead of normalising; the authors' code divides by the sums as here).

    How the dual is built on Captum: Captum's LRP starts from one output neuron and takes no
    custom initial relevance, so for the second pass the output layer (the `nn.Linear` that
    produces the model's output) is swapped, for the duration of the call, for a head that
    has the dual as an extra output: for CLRP2 a copy of the layer with the negated rows
    appended (`[W; -W]`, target `C + t`); for CLRP1 the layer followed by a module that
    appends one dual output (target `C`) and whose rule hands the dual's relevance to the
    other logits in the chosen shares. Each example may have its own target.

    Args:
        model: Classifier returning logits `[batch, C]` from a final `nn.Linear`; its leaf
            modules must be ReLU, pooling, linear, convolutional or shape-only (see
            `DeepTaylorLRP`). Use it in eval mode.
        variant: `"clrp1"` or `"clrp2"`.
        input_bounds: `(low, high)` of the inputs for the z^B rule on the first layer, as the
            paper does; None uses z+ there too.
        classifier: Dotted name of the output `nn.Linear`; found by a forward pass if None.
        dual_weights: CLRP1 only: `"uniform"` or `"scores"` shares of the other classes.

    Examples:
        >>> clrp = ContrastiveLRP(model, "clrp2", input_bounds=(0.0, 1.0))
        >>> maps = clrp.attribute(images, target=labels)   # >= 0, shaped like images
    """

    def __init__(
        self,
        model: nn.Module,
        variant: Variant = "clrp1",
        input_bounds: Bounds | None = None,
        classifier: str | None = None,
        dual_weights: DualWeights = "uniform",
    ) -> None:
        if variant not in ("clrp1", "clrp2"):
            raise ValueError(f"variant must be 'clrp1' or 'clrp2', got {variant!r}.")
        if dual_weights not in ("uniform", "scores"):
            raise ValueError(f"dual_weights must be 'uniform' or 'scores', got {dual_weights!r}.")
        self.dual_weights = dual_weights
        GradientAttribution.__init__(self, model)
        self.model = model
        self.variant = variant
        self.lrp = DeepTaylorLRP(model, input_bounds)
        if classifier is not None:
            self._check_classifier(classifier)
        self.classifier = classifier

    @property
    def multiplies_by_inputs(self) -> bool:
        """LRP maps include the input (relevance = activation x normalised gradient)."""
        return True

    def _check_classifier(self, name: str) -> nn.Linear:
        module = self.model.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise TypeError(
                f"ContrastiveLRP builds the dual class from the output layer's weights, which "
                f"must be an nn.Linear; {name or 'the model'!r} is {type(module).__name__}. "
                "Pass classifier=<name of the final nn.Linear>."
            )
        return module

    def attribute(
        self,
        inputs: TensorOrTupleOfTensorsGeneric,
        target: TargetType = None,
        additional_forward_args: object = None,
    ) -> TensorOrTupleOfTensorsGeneric:
        """Contrastive relevance of `target` against its dual class.

        Args:
            inputs: Tensor `[batch, ...]` or tuple of such tensors, as for Captum's LRP.
            target: Class to explain: an int, or one per example (list or 1-D tensor).
            additional_forward_args: Further arguments of the model's forward.

        Returns:
            Non-negative maps shaped like `inputs` (tuple in, tuple out): per example, the
            positive part of the difference of two maps that each sum to 1.
        """
        is_tuple = _is_tuple(inputs)
        # Leaf copies that require grad: Captum would otherwise flip the caller's flags (and
        # warn twice per call).
        input_tuple = tuple(
            x.detach().requires_grad_(True) for x in _format_tensor_into_tuples(inputs)
        )
        args = _format_additional_forward_args(additional_forward_args) or ()
        layout = _forward_layout(self.model, input_tuple, args)
        if layout.logits.dim() != 2:
            raise ValueError(
                f"ContrastiveLRP explains classifiers with [batch, classes] outputs; the model "
                f"returned shape {tuple(layout.logits.shape)}."
            )
        name = self.classifier if self.classifier is not None else layout.producer
        if name == "":
            raise ValueError(
                "ContrastiveLRP needs the output layer inside the model: wrap a bare layer as "
                "nn.Sequential(layer)."
            )
        if name is None:
            raise ValueError(
                "could not tell which module produces the model's output; pass "
                "classifier=<dotted name of the final nn.Linear>."
            )
        linear = self._check_classifier(name)
        n_classes = layout.logits.shape[1]
        targets = _target_vector(target, layout.logits.shape[0], layout.logits.device)

        lrp = self.lrp
        with lrp._rules(layout.first):
            r_target = _format_tensor_into_tuples(
                LRP.attribute(lrp, input_tuple, targets, additional_forward_args)
            )

        if self.variant == "clrp2":
            head: nn.Module = _negated_dual(linear)
            dual_target: TargetType = targets + n_classes
            user_rule = lrp._user_rules.get(linear)
            extra = {head: user_rule} if user_rule is not None else {}
            first = head if layout.first is linear else layout.first
        else:
            others = _OthersDual(targets, self.dual_weights)
            head = nn.Sequential(linear, others)
            dual_target = n_classes
            extra = {others: _ShareRule()}
            first = layout.first
        with _swapped(self.model, name, head), lrp._rules(first, extra):
            r_dual = LRP.attribute(lrp, input_tuple, dual_target, additional_forward_args)
        r_dual = _format_tensor_into_tuples(r_dual)

        contrast = tuple(
            (t - d).clamp(min=0).detach()
            for t, d in zip(_normalised(r_target), _normalised(r_dual), strict=True)
        )
        return _format_output(is_tuple, contrast)
