"""Which parameter blocks the logits are piecewise linear in, read from the autograd graph.

The Gauss-Newton block `Jᵀ Λ J` of a block equals its Hessian block where the logits are
piecewise linear in the block's parameters (the other parameters held fixed). That is a
property of the operations between the block and the logits, so one forward pass on one
example shows it: walking the autograd graph from the logits, a block is curved as soon as
one operation depends on it nonlinearly:

- an operation outside the known (piecewise) linear ones (`LINEAR`, `PIECEWISE_LINEAR`):
  SiLU, sigmoid, hardswish, GELU, tanh, softmax, ...;
- a product (`PRODUCTS`: convolution, matrix product, elementwise product, eval-mode
  batch-norm) two of whose factors depend on the block: a squeeze-excitation gate times
  its input, tied weights, or the whole model taken as one block;
- a division whose divisor depends on it;
- a layer or group normalisation whose input depends on it (not its own weight and bias).

Anything not recognised counts as curved, so the answer errs only towards "curved" (where
`exact` then measures the curvature with Hessian-vector products, as without this test).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.func import functional_call

LINEAR = frozenset(
    {
        "AddBackward0",
        "AddBackward1",
        "SubBackward0",
        "SubBackward1",
        "RsubBackward0",
        "RsubBackward1",
        "NegBackward0",
        "MulBackward1",  # times a number
        "DivBackward1",  # by a number
        "CatBackward0",
        "StackBackward0",
        "ViewBackward0",
        "UnsafeViewBackward0",
        "ReshapeAliasBackward0",
        "AliasBackward0",
        "CloneBackward0",
        "ToCopyBackward0",
        "PermuteBackward0",
        "TransposeBackward0",
        "TransposeBackward1",
        "TBackward0",
        "ExpandBackward0",
        "RepeatBackward0",
        "SqueezeBackward0",
        "SqueezeBackward1",
        "SqueezeBackward2",
        "UnsqueezeBackward0",
        "SliceBackward0",
        "SelectBackward0",
        "IndexBackward0",
        "IndexSelectBackward0",
        "GatherBackward0",
        "NarrowBackward0",
        "SplitBackward0",
        "SplitWithSizesBackward0",
        "UnbindBackward0",
        "ChunkBackward0",
        "AsStridedBackward0",
        "ConstantPadNdBackward0",
        "FlipBackward0",
        "RollBackward0",
        "SumBackward0",
        "SumBackward1",
        "MeanBackward0",
        "MeanBackward1",
        "AvgPool1DBackward0",
        "AvgPool2DBackward0",
        "AvgPool3DBackward0",
        "AdaptiveAvgPool1DBackward0",
        "AdaptiveAvgPool2DBackward0",
        "AdaptiveAvgPool3DBackward0",
        "UpsampleNearest2DBackward0",
        "UpsampleBilinear2DBackward0",
        "PixelShuffleBackward0",
        "EmbeddingBackward0",
    }
)
"""Operations linear in all their differentiable inputs together."""

PIECEWISE_LINEAR = frozenset(
    {
        "ReluBackward0",
        "ReluBackward1",
        "HardtanhBackward0",  # ReLU6
        "HardsigmoidBackward0",  # relu6(x + 3) / 6
        "LeakyReluBackward0",
        "LeakyReluBackward1",
        "ThresholdBackward0",
        "ClampBackward1",
        "ClampMinBackward0",
        "ClampMaxBackward0",
        "AbsBackward0",
        "MaximumBackward0",
        "MinimumBackward0",
        "MaxBackward0",
        "MaxBackward1",
        "MinBackward0",
        "MinBackward1",
        "AmaxBackward0",
        "AminBackward0",
        "MaxPool1DWithIndicesBackward0",
        "MaxPool2DWithIndicesBackward0",
        "MaxPool3DWithIndicesBackward0",
        "AdaptiveMaxPool1DBackward0",
        "AdaptiveMaxPool2DBackward0",
        "AdaptiveMaxPool3DBackward0",
    }
)
"""Operations piecewise linear in all their differentiable inputs (zero second derivative
almost everywhere)."""

PRODUCTS = {
    "MulBackward0": (0, 1),
    "ConvolutionBackward0": (0, 1),  # (input, weight, bias)
    "MmBackward0": (0, 1),
    "MvBackward0": (0, 1),
    "BmmBackward0": (0, 1),
    "DotBackward0": (0, 1),
    "AddmmBackward0": (1, 2),  # (bias, input, weight)
    "AddmvBackward0": (1, 2),
    "BaddbmmBackward0": (1, 2),
    "LinearBackward0": (0, 1),
    "NativeBatchNormBackward0": (0, 1),  # eval mode: (input, weight, bias)
    "CudnnBatchNormBackward0": (0, 1),
    "MiopenBatchNormBackward0": (0, 1),
}
"""Operations linear in each of their factors (at these input positions) and in their other
inputs: curved only in a block two factors depend on."""

DIVISIONS = frozenset({"DivBackward0"})
"""Linear in the dividend, curved in the divisor."""

NORMS = frozenset({"NativeLayerNormBackward0", "NativeGroupNormBackward0"})
"""Curved in their input (normalised per example), linear in their weight and bias."""


def curving_ops(
    model: nn.Module, params: dict[str, Tensor], inputs: tuple[Tensor, ...], blocks: list[list[str]]
) -> list[str | None]:
    """Per block (its parameter names), the first operation that curves the logits in it.

    None where the logits are piecewise linear in the block, on these inputs (one example
    suffices: the operations do not depend on the data). Parameters are differentiated
    as function inputs (`functional_call`), so frozen parameters count too.
    """
    leaves = {n: p.detach().requires_grad_() for n, p in params.items()}
    bit: dict[int, int] = {}
    for b, names in enumerate(blocks):
        for n in names:
            bit[id(leaves[n])] = bit.get(id(leaves[n]), 0) | (1 << b)
    with torch.enable_grad():
        out = functional_call(model, leaves, inputs)
    roots = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
    if not roots and blocks:
        raise RuntimeError("the model's outputs have no autograd graph to read")
    found: list[str | None] = [None] * len(blocks)
    deps: dict = {}
    for node in _post_order(roots):
        inputs_deps = [deps.get(fn, 0) if fn is not None else 0 for fn, _ in node.next_functions]
        variable = getattr(node, "variable", None)
        own = bit.get(id(variable), 0) if variable is not None else 0
        total = own
        for d in inputs_deps:
            total |= d
        deps[node] = total
        curved = _curved_bits(type(node).__name__, inputs_deps, total)
        if curved:
            name = type(node).__name__.removesuffix("Backward0").removesuffix("Backward1")
            for b in range(len(blocks)):
                if curved >> b & 1 and found[b] is None:
                    found[b] = name
    return found


def _curved_bits(kind: str, inputs_deps: list[int], total: int) -> int:
    """The blocks (as bits) an operation of this kind curves the output in."""
    if kind in LINEAR or kind in PIECEWISE_LINEAR or kind == "AccumulateGrad":
        return 0
    if kind in PRODUCTS:
        i, j = PRODUCTS[kind]
        if max(i, j) >= len(inputs_deps):
            return total
        return inputs_deps[i] & inputs_deps[j]
    if kind in DIVISIONS:
        return inputs_deps[1] if len(inputs_deps) > 1 else total
    if kind in NORMS:
        return inputs_deps[0] if inputs_deps else total
    return total


def _tensors(out) -> list[Tensor]:
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def _post_order(roots: list) -> list:
    """The graph's nodes, every node after all the nodes it reads from (iterative DFS)."""
    order, seen = [], set()
    for root in roots:
        if root in seen:
            continue
        stack = [(root, iter(root.next_functions))]
        seen.add(root)
        while stack:
            node, children = stack[-1]
            for fn, _ in children:
                if fn is not None and fn not in seen:
                    seen.add(fn)
                    stack.append((fn, iter(fn.next_functions)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order
