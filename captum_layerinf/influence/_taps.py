"""Linear and convolution layers as `inputs x output-gradients`: per-example gradients by structure.

For `nn.Linear`, `nn.Conv1d` and `nn.Conv2d` the gradient of one example's loss w.r.t. the
weight is `Σ_t g_t a_tᵀ` over positions t (tokens, or conv output positions with `a_t` the
unfolded input patch; a bias is a constant-1 input). Holding `a [B, T, d_in]` and
`g [B, T, d_out]` costs `B T (d_in + d_out)` numbers instead of `B d_out d_in`, and one
backward pass through the model serves every layer. EK-FAC's Kronecker factors are built
from the same pieces.

A grouped convolution (`groups=G`, depthwise when G = channels) is G independent blocks:
its pieces carry a group axis, `a [B, G, T, d_in]` and `g [B, G, T, d_out]` with d_in,
d_out per group, and its per-example gradient is `[B, G, d_out, d_in]`.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .._utils.modules import shared_parameter_names


@dataclass(frozen=True)
class StructuredLayer:
    """A Linear or Conv1d/Conv2d block whose per-example gradients are `Σ_t g_t a_tᵀ`.

    Attributes:
        name: Module name.
        weight: Parameter name of the weight.
        bias: Parameter name of the bias, if the block contains it.
        d_in: Input dimension (per group), including the constant-1 column of a bias.
        d_out: Output dimension (per group).
        groups: Number of independent groups of a convolution (1 otherwise).
    """

    name: str
    weight: str
    bias: str | None
    d_in: int
    d_out: int
    groups: int = 1

    def activations(self, module: nn.Module, x: Tensor) -> Tensor:
        """The inputs `a [B, T, d_in]` (`[B, G, T, d_in]` if grouped) of one call."""
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            if self.groups == 1:
                return _patches_last(module, x, self.bias is not None)
            a = _patches(module, x)
            b, _, t = a.shape
            a = a.view(b, self.groups, -1, t).transpose(2, 3)
        else:
            a = x.reshape(x.shape[0], -1, x.shape[-1])
        if self.bias is not None:
            a = torch.cat([a, a.new_ones(a.shape[:-1] + (1,))], dim=-1)
        return a

    def output_grads(self, module: nn.Module, gy: Tensor) -> Tensor:
        """Gradients w.r.t. the outputs of one call as `g [B, T, d_out]` (`[B, G, T, d_out]`)."""
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            g = gy.flatten(2)
            if self.groups > 1:
                return g.view(g.shape[0], self.groups, self.d_out, -1).transpose(2, 3)
            return g.transpose(1, 2)
        return gy.reshape(gy.shape[0], -1, gy.shape[-1])

    def to_flat(self, m: Tensor) -> Tensor:
        """`[..., (G,) d_out, d_in]` matrices to the block's flat parameter order (weight, bias).

        One copy: the weight and bias columns are written into views of the flat result
        (vgg11_bn's `classifier.0`: 0.4 GB per float32 vector).
        """
        k = 3 if self.groups > 1 else 2
        if self.bias is None:
            return m.flatten(-k)
        lead, shape = m.shape[:-k], m.shape[-k:-1]
        out = m.new_empty(*lead, self.groups * self.d_out * self.d_in)
        weight, bias = self.flat_views(out)
        weight.copy_(m[..., :-1])
        bias.copy_(m[..., -1])
        assert weight.shape[-k:-1] == shape  # the matrices are this layer's
        return out

    def flat_views(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """Views of a biased layer's flat vectors `[..., P]`: weight part, bias part.

        The weight part as `[..., (G,) d_out, d_in - 1]`, the bias as `[..., (G,) d_out]`.
        """
        lead = v.shape[:-1]
        shape = (self.groups, self.d_out) if self.groups > 1 else (self.d_out,)
        n_w = self.groups * self.d_out * (self.d_in - 1)
        return v[..., :n_w].view(*lead, *shape, self.d_in - 1), v[..., n_w:].view(*lead, *shape)

    def from_flat(self, v: Tensor) -> Tensor:
        """The block's flat vectors `[..., P]` as `[..., (G,) d_out, d_in]` matrices."""
        lead = v.shape[:-1]
        shape = (self.groups, self.d_out) if self.groups > 1 else (self.d_out,)
        if self.bias is None:
            return v.reshape(*lead, *shape, self.d_in)
        n_w = self.groups * self.d_out * (self.d_in - 1)
        w = v[..., :n_w].reshape(*lead, *shape, self.d_in - 1)
        return torch.cat([w, v[..., n_w:].reshape(*lead, *shape, 1)], dim=-1)


def _padded(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The input as the module pads it, and the zero padding still to apply per side."""
    padding = module.padding
    if module.padding_mode != "zeros" or isinstance(padding, str):
        # As the module pads: string padding ("same" may be uneven) or a padding mode.
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        padding = (0,) * len(module.kernel_size)
    return x, tuple(padding)


def _patches(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """The unfolded input patches `[B, C_in * prod(kernel), T]` of a convolution."""
    x, padding = _padded(module, x)
    if isinstance(module, nn.Conv1d):
        return F.unfold(
            x.unsqueeze(2),
            (1, *module.kernel_size),
            (1, *module.dilation),
            (0, *padding),
            (1, *module.stride),
        )
    return F.unfold(x, module.kernel_size, module.dilation, padding, module.stride)


def _patches_last(module: nn.Conv1d | nn.Conv2d, x: Tensor, bias: bool) -> Tensor:
    """`_patches` with positions first, `[B, T, C_in * prod(kernel)]`, and a ones column if `bias`.

    The numbers of `F.unfold`, its transpose and the concatenation of the ones, written
    by one strided copy per kernel offset from the input, channels last (a zero-padded
    copy where the convolution pads): two to four times faster on small feature maps,
    where `F.unfold` costs as much as the convolution's forward pass.
    """
    x, padding = _padded(module, x)
    kernel, dilation, stride = module.kernel_size, module.dilation, module.stride
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(2)
        kernel, dilation, stride = ((1, *v) for v in (kernel, dilation, stride))
        padding = (0, *padding)
    b, c, h, w = x.shape
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = kernel, dilation, padding, stride
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    last = x.permute(0, 2, 3, 1)
    if ph or pw:
        padded = x.new_zeros(b, h + 2 * ph, w + 2 * pw, c)
        padded[:, ph : ph + h, pw : pw + w] = last
        last = padded
    d = c * kh * kw
    out = x.new_empty(b, ho, wo, d + bias)
    patches = out[..., :d].view(b, ho, wo, c, kh, kw)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (ho - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (wo - 1) + 1, sw)
            patches[..., i, j] = last[:, rows, cols]
    if bias:
        out[..., d] = 1
    return out.view(b, ho * wo, d + bias)


_UNCALLED: weakref.WeakSet[nn.Module] = weakref.WeakSet()
"""Modules whose parameters their model uses without calling them (`uncalled_layers`)."""


def mark_uncalled(modules: Iterable[nn.Module]) -> None:
    """Records modules that their model never calls: they get no structured gradients."""
    _UNCALLED.update(modules)


def structured_layer(model: nn.Module, layers, param_names) -> StructuredLayer | None:
    """The block as a `StructuredLayer`, or None where the structure does not apply.

    It applies to a block that is one `nn.Linear`, `nn.Conv1d` or `nn.Conv2d` (any groups,
    stride, dilation, integer or string padding, any padding mode) whose parameters in the
    block are its weight (and bias), and that its model calls as a module: the projections
    of an `nn.MultiheadAttention` are not (it passes their weights to `F.linear` itself, so
    no hook sees their inputs), nor are the modules `mark_uncalled` recorded.
    """
    if layers is None or len(layers) != 1:
        return None
    name = layers[0]
    module = model.get_submodule(name)
    parent = model.get_submodule(name.rpartition(".")[0]) if name else None
    if isinstance(parent, nn.MultiheadAttention) or module in _UNCALLED:
        return None
    prefix = f"{name}." if name else ""
    weight, bias = prefix + "weight", prefix + "bias"
    names = set(param_names)
    if weight not in names or names - {weight, bias}:
        return None
    if names & shared_parameter_names(model):
        return None  # tied weights: their gradient also flows through other modules
    has_bias = bias in names
    groups = 1
    if isinstance(module, nn.Linear):
        d_in = module.in_features
    elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
        d_in, groups = module.weight[0].numel(), module.groups
    else:
        return None
    return StructuredLayer(
        name,
        weight,
        bias if has_bias else None,
        d_in + has_bias,
        module.weight.shape[0] // groups,
        groups,
    )


class Taps:
    """Records the inputs and outputs of structured layers during one forward pass.

    Args:
        model: The model (eval mode).
        layers: The structured layers to record.
    """

    def __init__(self, model: nn.Module, layers: list[StructuredLayer]) -> None:
        self.model = model
        self.layers = layers
        self.modules = [model.get_submodule(s.name) for s in layers]
        self.calls: list[list[tuple[Tensor, Tensor]]] = [[] for _ in layers]

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        handles = []
        try:
            for i, module in enumerate(self.modules):

                def hook(_, args, out, i=i):
                    self.calls[i].append((args[0].detach(), out))

                handles.append(module.register_forward_hook(hook))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, inputs: tuple[Tensor, ...]) -> Tensor:
        """Runs the model with differentiable layer weights; returns logits.

        Weights that do not require gradients are replaced by differentiable copies, so
        that every layer's output is in the graph; when all of them already do, the model
        runs as it is (swapping the parameters costs about a quarter of a small model's
        forward pass). Gradients are only ever taken with respect to the layers'
        outputs, so the weights' `.grad` is never touched.
        """
        self.calls = [[] for _ in self.layers]
        weights = [self.model.get_parameter(s.weight) for s in self.layers]
        with torch.enable_grad(), self._hooks():
            if all(w.requires_grad for w in weights):
                return self.model(*inputs)
            params = {
                s.weight: w.detach().requires_grad_(True)
                for s, w in zip(self.layers, weights, strict=True)
            }
            return functional_call(self.model, params, inputs, strict=False)

    def activations(self) -> list[Tensor]:
        """Per layer `a [B, T, d_in]` of the last forward (several calls concatenated on T)."""
        for s, calls in zip(self.layers, self.calls, strict=True):
            if not calls:
                raise RuntimeError(
                    f"layer {s.name!r} was not called as a module by the forward pass (its "
                    "weights are used directly, e.g. F.linear(x, layer.weight)), so its "
                    "gradients cannot be formed from its inputs and outputs. Call the module "
                    "itself in forward, or choose a strategy without Kronecker structure for "
                    "it (hessian='exact', 'cg' or 'identity')."
                )
        return [
            _cat([s.activations(m, x) for x, _ in calls])
            for s, m, calls in zip(self.layers, self.modules, self.calls, strict=True)
        ]

    def output_grads(self, logits: Tensor, cotangent: Tensor, retain: bool) -> list[Tensor]:
        """Per layer `g [B, T, d_out]`: the backward pass of `cotangent [B, C]` from the logits.

        Because examples are independent in eval mode, row b of `g` belongs to example b.
        """
        outs = [y for calls in self.calls for _, y in calls]
        grads = torch.autograd.grad(
            logits, outs, grad_outputs=cotangent, retain_graph=retain, allow_unused=True
        )
        grads = tuple(
            torch.zeros_like(y) if g is None else g for g, y in zip(grads, outs, strict=True)
        )
        result, start = [], 0
        for s, m, calls in zip(self.layers, self.modules, self.calls, strict=True):
            part = grads[start : start + len(calls)]
            start += len(calls)
            result.append(_cat([s.output_grads(m, g) for g in part]))
        return result


def _cat(parts: list[Tensor]) -> Tensor:
    """Concatenation on the positions T (no copy for a module called once)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
