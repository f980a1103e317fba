"""Layers of a model: discovery in forward order, validation, and state that must be restored."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn


def parameterised_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that own parameters directly (not through children), by dotted name.

    A parameter shared by several modules (tied weights, `b.weight = a.weight`) is owned
    by the first of them in `model.named_modules()` order, the name under which
    `model.named_parameters()` lists it; a module whose parameters are all owned
    elsewhere is not listed.
    """
    owned = _owned_names(model)
    return {name: module for name, module in model.named_modules() if _own(module, name, owned)}


def layer_parameter_names(model: nn.Module, layer: str) -> list[str]:
    """Full dotted names (as in `model.named_parameters()`) of a layer's own parameters.

    Parameters shared with a module listed earlier are left out: they belong to that one.
    """
    return _own(model.get_submodule(layer), layer, _owned_names(model))


def _own(module: nn.Module, layer: str, owned: dict[int, str]) -> list[str]:
    prefix = f"{layer}." if layer else ""
    return [
        prefix + name
        for name, p in module.named_parameters(recurse=False)
        if owned.get(id(p)) == prefix + name
    ]


def _owned_names(model: nn.Module) -> dict[int, str]:
    """The name under which `model.named_parameters()` lists each parameter, by identity."""
    return {id(p): name for name, p in model.named_parameters()}


def shared_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in `model.named_parameters()`) of parameters that several modules use.

    Their gradient sums the contributions of every module using them, so it cannot be
    formed from one module's inputs and output gradients.
    """
    count: dict[int, int] = {}
    # One walk (this runs per block, on models of 400 modules); a module registered under
    # two names counts its parameters twice.
    for _, module in model.named_modules(remove_duplicate=False):
        for p in module._parameters.values():
            if p is not None:
                count[id(p)] = count.get(id(p), 0) + 1
    if all(c == 1 for c in count.values()):
        return set()
    return {name for name, p in model.named_parameters() if count[id(p)] > 1}


def forward_order(model: nn.Module, names: Sequence[str], inputs: tuple[Tensor, ...]) -> list[str]:
    """Returns `names` sorted by the first call of each module in one forward pass.

    Modules that the forward pass never calls are dropped: their influence is zero.
    """
    calls: list[str] = []
    handles = []
    try:
        for name in names:
            module = model.get_submodule(name)
            handles.append(
                module.register_forward_pre_hook(lambda *_, name=name: calls.append(name))
            )
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    order = list(dict.fromkeys(calls))
    return order


def resolve_layers(
    model: nn.Module,
    layers: Sequence[str] | None,
    example_inputs: tuple[Tensor, ...],
    called: Sequence[str] | None = None,
) -> list[str]:
    """Validates or discovers the layers to explain.

    Args:
        model: The model.
        layers: Dotted module names, or None for every module owning trainable parameters.
        example_inputs: One small batch, used to order the layers as the forward pass runs.
        called: `forward_order` of every parameterised module on `example_inputs`, if
            already known (saves a forward pass).

    Returns:
        Layer names in forward order.
    """
    owners = parameterised_modules(model)
    if layers is None:
        return _default_layers(model, owners, example_inputs, called)
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of names, e.g. [{layers!r}]; got a string.")
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty; pass None to use every layer with parameters.")
    for name in layers:
        if name not in owners:
            shown = ", ".join(repr(v) for v in owners)
            raise ValueError(f"{_unknown_layer(model, name)}Valid layer names: {shown}.")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers contains duplicates: {layers}.")
    return layers


def _default_layers(
    model: nn.Module,
    owners: dict[str, nn.Module],
    example_inputs: tuple[Tensor, ...],
    called: Sequence[str] | None,
) -> list[str]:
    """Every module owning trainable parameters that the forward pass calls, in its order."""
    trainable = [
        name
        for name, module in owners.items()
        if any(p.requires_grad for p in module.parameters(recurse=False))
    ]
    if not trainable:
        raise ValueError(
            "the model has no trainable parameters; name the layers to explain with `layers=`."
        )
    if called is None:
        order = forward_order(model, trainable, example_inputs)
    else:
        order = [name for name in called if name in trainable]
    if not order:
        raise ValueError("no parameterised module of the model is called by its forward pass.")
    return order


def uncalled_layers(
    model: nn.Module, example_inputs: tuple[Tensor, ...], called: Sequence[str]
) -> list[str]:
    """Modules owning trainable parameters that the forward pass uses but never calls.

    `nn.MultiheadAttention` passes its `out_proj`'s weights to `F.linear` without calling
    it, as may any model (`F.linear(x, self.fc.weight)`): such a layer's parameters shape
    the outputs like any other's, but no hook sees its inputs. Found by differentiating
    the outputs of one example (only where some module is not called).

    Args:
        model: The model (eval mode).
        example_inputs: One small batch.
        called: `forward_order` of every parameterised module on `example_inputs`.
    """
    owners = parameterised_modules(model)
    names = [
        name
        for name, module in owners.items()
        if name not in called and any(p.requires_grad for p in module.parameters(recurse=False))
    ]
    if not names:
        return []
    params = {
        name: [p for p in model.get_submodule(name).parameters(recurse=False) if p.requires_grad]
        for name in names
    }
    flat = [p for ps in params.values() for p in ps]
    one = tuple(x[:1] for x in example_inputs)  # eval mode: examples are independent
    with torch.enable_grad():
        outputs = model(*one)
        leaves = [
            t
            for t in torch.utils._pytree.tree_leaves(outputs)
            if isinstance(t, Tensor) and t.requires_grad
        ]
        if not leaves:
            return []
        total = torch.stack([t.sum() for t in leaves]).sum()
        grads = iter(torch.autograd.grad(total, flat, allow_unused=True))
    return [name for name, ps in params.items() if any([next(grads) is not None for _ in ps])]


def _unknown_layer(model: nn.Module, name: str) -> str:
    """Why `name` is no layer: unknown, owns no parameters, or shares another's."""
    if not _has_submodule(model, name):
        return f"unknown layer {name!r}. "
    module = model.get_submodule(name)
    kind = type(module).__name__
    owners = _owned_names(model)
    shared = [owners[id(p)] for p in module.parameters(recurse=False)]
    if shared:
        return (
            f"'{name}' is a {kind} whose parameters are shared with another module "
            f"and attributed to it, once: {', '.join(shared)}. "
        )
    return f"'{name}' is a {kind} that owns no parameters itself. "


def _has_submodule(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


@contextlib.contextmanager
def evaluation_state(model: nn.Module) -> Iterator[None]:
    """Runs in eval mode (warning if any module was training), then restores the state.

    Restored, also on errors: every module's mode and every parameter's `requires_grad`.

    Each submodule's own `training` flag is saved: a frozen BatchNorm kept in eval mode
    inside a model in training mode stays in eval mode afterwards.
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = [name or "the model" for name, m in model.named_modules() if m.training]
    if training:
        which = "the model" if model.training else f"module(s) {training[:5]} of the model"
        warnings.warn(
            f"{which} is in training mode; influence is computed in eval mode (dropout off, "
            "batch-norm running statistics) and every module's mode is restored afterwards. "
            "Call model.eval() to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
        model.eval()
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def output_transform(model: nn.Module, output_fn: Callable[[Any], Tensor] | None) -> Iterator[None]:
    """Makes `model(...)` return `output_fn(model(...))` inside the context.

    For models whose output is a tuple, a dict or a HuggingFace-style object: a forward
    hook on the model, removed on exit (also on errors). Nothing happens for None.
    """
    if output_fn is None:
        yield
        return
    handle = model.register_forward_hook(lambda _module, _args, out: output_fn(out))
    try:
        yield
    finally:
        handle.remove()


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's parameters (CPU for a model without parameters).

    Raises:
        ValueError: The parameters are spread over several devices.
    """
    devices = list(dict.fromkeys(p.device for p in model.parameters()))
    if len(devices) > 1:
        raise ValueError(
            f"the model's parameters are on several devices ({', '.join(map(str, devices))}); "
            "move the whole model to one device with model.to(device). The data is moved "
            "to the model's device."
        )
    return devices[0] if devices else torch.device("cpu")


def check_independent_examples(model: nn.Module) -> None:
    """Refuses batch-norm layers that normalise with batch statistics even in eval mode."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            raise ValueError(
                f"module {name!r} ({type(module).__name__}) keeps no running statistics "
                "(track_running_stats=False), so even in eval mode it normalises each batch "
                "with that batch's statistics: an example's output depends on the other "
                "examples of its batch, and per-example influence is not defined. Give it "
                "running statistics (track_running_stats=True, estimated on the training "
                "set) or use a per-example normalisation (nn.GroupNorm, nn.LayerNorm)."
            )


def check_finite_weights(model: nn.Module) -> None:
    """Raises when a parameter or floating-point buffer holds NaN or infinite values."""
    named = [*model.named_parameters(), *model.named_buffers()]
    for name, t in named:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(
                f"the model's {name!r} contains NaN or infinite values; influence needs finite "
                "weights. Load a checkpoint from before training diverged (or lower the "
                "learning rate)."
            )


def warn_low_precision(model: nn.Module) -> None:
    """Warns when the model's floating-point parameters are float16 or bfloat16.

    Per-example gradients and curvature in half precision (8 or 11 bits of mantissa) were
    measured several percent off per conv layer; the fix is a float32 copy of the model.
    """
    low = sorted(
        {str(p.dtype) for p in model.parameters() if p.dtype in (torch.float16, torch.bfloat16)}
    )
    if low:
        warnings.warn(
            f"the model's parameters are {', '.join(low)}: gradients and curvature in half "
            "precision are off by several percent per layer. For accurate influence pass a "
            "float32 copy, e.g. copy.deepcopy(model).float() (and float32 inputs).",
            UserWarning,
            stacklevel=3,
        )
