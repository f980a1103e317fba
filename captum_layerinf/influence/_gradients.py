"""Per-example gradients, output Jacobians and Hessian products with torch.func."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jacrev, jvp, vjp, vmap
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.overrides import TorchFunctionMode

from .._utils.losses import ExampleLoss
from .._utils.tensors import tensor_sum

Params = dict[str, Tensor]

HVP_CHUNK_BYTES = 2**30
"""Memory a chunk of vectorised Hessian-vector products may take: `GradientEngine.hvp`
evaluates at most `HVP_CHUNK_BYTES // (HVP_COPIES x one forward pass's module outputs)`
products at once (forward-over-reverse keeps primal and tangent activations and their
gradients for each product), and splits a batch whose single product would pass it into
sub-batches of examples (the products of a summed loss add up over examples)."""
HVP_COPIES = 10
"""Memory of one Hessian-vector product, in forward passes' leaf-module outputs. Measured
(one curvature probe, 4 examples at 224x224, peak RSS growth over the module outputs):
resnet18 4.5, densenet121 4.1, vgg11_bn 4.6, mobilenet_v3_small 5.6, efficientnet_b0 9.5
(its squeeze-excitation products and residual sums are no module's output)."""
PROBE_TANGENT_BYTES = 2**28
"""Curvature probes run together on groups of blocks whose tangents (one per block, over
all the group's parameters) take about this much at most."""


@dataclass
class LogitCurvature:
    """Pieces of the Gauss-Newton block of one batch.

    Attributes:
        jacobians: Per-example output Jacobians, `Tensor [B, C, *param.shape]` per parameter
            (the outputs of an example flattened to C values).
        loss_hessian: Hessian of each example's loss w.r.t. its outputs, `Tensor [B, C, C]`.
    """

    jacobians: Params
    loss_hessian: Tensor


class twice_differentiable(TorchFunctionMode):  # noqa: N801 (used as a context manager)
    """Evaluates ops whose second derivatives PyTorch lacks through equivalent ones.

    `F.hardsigmoid` (torchvision's MobileNetV3 and EfficientNet squeeze-excitation) has
    neither a forward-mode nor a double-backward derivative; inside this context it is
    computed as `relu6(x + 3) / 6`, the same function, whose derivatives exist.
    `F.scaled_dot_product_attention` (`nn.MultiheadAttention`, transformer layers) picks a
    fused kernel (flash attention on CPU) without them; inside this context it runs its
    reference ("math") implementation, the same function.
    """

    def __enter__(self):
        self._attention = sdpa_kernel(SDPBackend.MATH)
        self._attention.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._attention.__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.hardsigmoid:
            return F.relu6(args[0] + 3) / 6
        return func(*args, **kwargs)


class GradientEngine:
    """Differentiates a model's per-example losses w.r.t. chosen parameters.

    The model is evaluated with `torch.func.functional_call`, so parameters are function
    inputs: frozen parameters are differentiable too and no `requires_grad` flag changes.

    Args:
        model: The model, in eval mode while the engine is used.
        loss: Per-example loss.
    """

    def __init__(self, model: nn.Module, loss: ExampleLoss) -> None:
        self.model = model
        self.loss = loss
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self._forward_ad: bool | None = None
        self._residuals: dict[tuple, float] = {}
        self._activation_bytes: dict[tuple, int] = {}

    def _select(self, names: list[str]) -> Params:
        return {n: self.params[n] for n in names}

    def _forward_one(self, params: Params, *inputs: Tensor) -> Tensor:
        batch = tuple(x.unsqueeze(0) for x in inputs)
        return functional_call(self.model, params, batch).squeeze(0)

    def _loss_one(self, params: Params, *inputs_and_label: Tensor) -> Tensor:
        *inputs, label = inputs_and_label
        return self.loss.single(self._forward_one(params, *inputs), label)

    def outputs(self, inputs: tuple[Tensor, ...], labels: Tensor, what: str) -> Tensor:
        """Logits of a batch after validating labels and losses (NaN losses raise)."""
        dtype = next(iter(self.params.values())).dtype
        for i, x in enumerate(inputs):
            if x.is_floating_point() and x.dtype != dtype:
                raise TypeError(
                    f"`{what}`: input {i} is {x.dtype} but the model's parameters are {dtype}; "
                    f"convert one of them (e.g. x.to({dtype}) or model.to({x.dtype}))."
                )
        with torch.no_grad():
            out = self.model(*inputs)
            self.loss.check_labels(labels, out, what)
            losses = self.loss(out, labels)
        bad = (~torch.isfinite(losses)).nonzero().flatten()
        if len(bad):
            raise ValueError(
                f"`{what}`: the loss is NaN or infinite for {len(bad)} example(s) of a batch "
                f"(positions {bad[:10].tolist()} in that batch). Check the inputs and the "
                "model's weights for NaNs or overflow."
            )
        return out

    def grads(self, inputs: tuple[Tensor, ...], labels: Tensor, names: list[str]) -> Params:
        """Per-example loss gradients, `Tensor [B, *param.shape]` per parameter name.

        Examples are vectorised `examples_per_pass` at a time, so that their reverse passes
        keep at most about `HVP_CHUNK_BYTES` of activations.
        """
        in_dims = (None,) + (0,) * (len(inputs) + 1)
        params = self._select(names)
        chunk = self.examples_per_pass(inputs)
        with torch.no_grad():
            try:
                g, _ = vmap(grad_and_value(self._loss_one), in_dims=in_dims, chunk_size=chunk)(
                    params, *inputs, labels
                )
            except RuntimeError:
                # Some modules cannot run under vmap (nn.LSTM writes a batched state into
                # an unbatched one): one example at a time gives the same gradients.
                rows = [
                    grad(self._loss_one)(params, *(x[i] for x in inputs), labels[i])
                    for i in range(len(labels))
                ]
                g = {n: torch.stack([r[n] for r in rows]) for n in names}
        return g

    def block_grads(
        self, inputs: tuple[Tensor, ...], labels: Tensor, blocks: list[list[str]] | list
    ) -> list[Tensor]:
        """Per-example gradients flattened per block: one `Tensor [B, P_b]` per block.

        Args:
            inputs: Model inputs of the batch.
            labels: Labels of the batch.
            blocks: Per block, the parameter names (or objects with `param_names`).
        """
        names_per_block = [getattr(b, "param_names", b) for b in blocks]
        names = list(dict.fromkeys(n for names in names_per_block for n in names))
        g = self.grads(inputs, labels, names)
        return [flatten([g[n] for n in names], 1) for names in names_per_block]

    def logit_curvature(
        self, inputs: tuple[Tensor, ...], labels: Tensor, names: list[str]
    ) -> LogitCurvature:
        """Per-example output Jacobians and loss Hessians w.r.t. the outputs.

        Outputs of any shape `[B, ...]` are flattened to `C` values per example. Examples
        are vectorised a chunk at a time, so that the `C` reverse passes of a chunk keep at
        most `HVP_CHUNK_BYTES` of activations.
        """
        in_dims = (None,) + (0,) * len(inputs)

        def flat_one(params: Params, *x: Tensor) -> Tensor:
            return self._forward_one(params, *x).reshape(-1)

        with torch.no_grad():
            outputs = self.model(*inputs)
            lam = self.loss.output_hessian(outputs, labels)
            n = len(labels)
            chunk = self.examples_per_pass(inputs, products=outputs[0].numel())
            params = self._select(names)
            try:
                jac = vmap(jacrev(flat_one), in_dims=in_dims, chunk_size=chunk)(params, *inputs)
            except RuntimeError:  # a module that cannot run under vmap, as in `grads`
                rows = [jacrev(flat_one)(params, *(x[i] for x in inputs)) for i in range(n)]
                jac = {k: torch.stack([r[k] for r in rows]) for k in names}
        return LogitCurvature(jac, lam)

    def uses_forward_ad(self, probe: Callable[[], object]) -> bool:
        """Whether forward-mode AD works through the model (decided once, by `probe()`).

        Some ops, and custom autograd Functions without a `jvp`, have no forward-mode
        derivative; Hessian products then use reverse-over-reverse differentiation, which
        gives the same values.
        """
        if self._forward_ad is None:
            try:
                probe()
                self._forward_ad = True
            except (NotImplementedError, RuntimeError):
                self._forward_ad = False
        return self._forward_ad

    def curvature_residual(
        self, inputs: tuple[Tensor, ...], labels: Tensor, names: list[str], seed: int = 0
    ) -> float:
        """Relative size of the Hessian term that Gauss-Newton leaves out, on one batch.

        The Hessian of the loss w.r.t. parameters is `Jᵀ Λ J + Σ_c (∂L/∂f_c) ∇²f_c`. The
        second term vanishes when the outputs are piecewise linear in these parameters
        (ReLU, max-pool, eval-mode batch-norm after the layer). Returns `‖R v‖ / ‖Jᵀ Λ J v‖`
        for a random `v`, where `R` is that second term: 0.0 means Gauss-Newton is exact.
        The answer is remembered per parameter set, seed and batch (strategies that probe
        the same block on the same batch pay once).
        """
        return self.curvature_residuals(inputs, labels, [names], seed)[0]

    def curvature_residuals(
        self, inputs: tuple[Tensor, ...], labels: Tensor, blocks: list[list[str]], seed: int = 0
    ) -> list[float]:
        """`curvature_residual` of several blocks, their products vectorised together.

        Block b's random direction `v_b` is zero outside the block, so the block's rows of
        `R v_b` are `R_bb v_b` (its own second-order term), as when probed alone; one
        batched pass serves all blocks not probed before.
        """
        batch = _fingerprint(inputs, labels)
        keys = [(tuple(names), seed, batch) for names in blocks]
        todo = list(dict.fromkeys(k for k in keys if k not in self._residuals))
        group: list[tuple] = []
        for key in todo:
            group.append(key)
            numel = sum(self.params[n].numel() for k in group for n in k[0])
            if key is todo[-1] or len(group) * numel * 8 > PROBE_TANGENT_BYTES:
                found = self._curvature_residuals(inputs, labels, [list(k[0]) for k in group], seed)
                self._residuals.update(zip(group, found, strict=True))
                group = []
        return [self._residuals[k] for k in keys]

    def _curvature_residuals(
        self, inputs: tuple[Tensor, ...], labels: Tensor, blocks: list[list[str]], seed: int
    ) -> list[float]:
        params = self._select(list(dict.fromkeys(n for block in blocks for n in block)))
        tangents = _block_tangents(params, blocks, seed)
        # `R v` and `G v` are sums over examples: a batch too large for one product at once
        # is probed a sub-batch at a time.
        r_v: Params = {}
        gn_v: Params = {}
        for sub_inputs, sub_labels in _sub_batches(inputs, labels, self.examples_per_pass(inputs)):
            parts = self._probe_products(sub_inputs, sub_labels, params, tangents)
            for total, part in zip((r_v, gn_v), parts, strict=True):
                for n, t in part.items():
                    total[n] = total[n] + t if n in total else t
        return [_ratio(r_v, gn_v, b, block) for b, block in enumerate(blocks)]

    def _probe_products(
        self, inputs: tuple[Tensor, ...], labels: Tensor, params: Params, tangents: Params
    ) -> tuple[Params, Params]:
        """`(R v, G v)` of the batch's summed loss for each tangent `v` (leading dimension)."""

        def forward(p: Params) -> Tensor:
            return functional_call(self.model, p, inputs)

        with torch.no_grad(), twice_differentiable():
            outputs, pullback = vjp(forward, params)[:2]
            dout = vmap(grad(self.loss.single))(outputs, labels)
            lam = self.loss.output_hessian(outputs, labels)

            def weighted(p: Params) -> Tensor:
                return (forward(p) * dout).sum()

            def forward_mode(v: Params) -> tuple[Tensor, Params, Params]:
                jv = jvp(forward, (params,), (v,))[1]
                return jv, jvp(grad(weighted), (params,), (v,))[1], gauss_newton(jv)

            def reverse_mode(v: Params) -> tuple[Tensor, Params, Params]:
                # J v as the gradient of the linear map u -> (Jᵀ u)·v; R v as the gradient
                # of (∇ weighted)·v: two reverse passes each.
                def jt_dot_v(u: Tensor) -> Tensor:
                    return _dot(vjp(forward, params)[1](u)[0], v)

                jv = grad(jt_dot_v)(torch.zeros_like(outputs))
                r_v = grad(lambda p: _dot(grad(weighted)(p), v))(params)
                return jv, r_v, gauss_newton(jv)

            def gauss_newton(jv: Tensor) -> Params:
                flat = jv.reshape(len(jv), -1)
                return pullback(torch.einsum("bcd,bd->bc", lam, flat).view_as(outputs))[0]

            first = {n: t[0] for n, t in tangents.items()}
            forward_ad = self.uses_forward_ad(lambda: forward_mode(first))
            probe = forward_mode if forward_ad else reverse_mode
            count = len(next(iter(tangents.values())))
            _, r_v, gn_v = vmap(probe, chunk_size=self.hvp_chunk(inputs, count))(tangents)
        return r_v, gn_v

    def hvp(
        self,
        inputs: tuple[Tensor, ...],
        labels: Tensor,
        names: list[str],
        vectors: Tensor,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Hessian of the batch's SUMMED loss w.r.t. `names` times each row of `vectors [m, P]`.

        Forward-over-reverse (`jvp` of `grad`) where the model supports forward-mode AD,
        reverse-over-reverse (`vjp` of `grad`, the Hessian being symmetric) otherwise.
        At most `chunk_size` products (None: all) are vectorised at once, and fewer where
        their activations would pass `HVP_CHUNK_BYTES`; a batch whose single product would
        pass it is taken a sub-batch of examples at a time (`examples_per_pass`).
        """
        step = self.examples_per_pass(inputs)
        if step < len(labels):
            return tensor_sum(
                self.hvp(sub_inputs, sub_labels, names, vectors, chunk_size)
                for sub_inputs, sub_labels in _sub_batches(inputs, labels, step)
            )
        chunk_size = self.hvp_chunk(inputs, len(vectors) if chunk_size is None else chunk_size)
        params = self._select(names)
        shapes = [p.shape for p in params.values()]
        sizes = [p.numel() for p in params.values()]
        theta = flatten(params.values())
        vectors = vectors.to(theta.dtype)

        def total(flat: Tensor) -> Tensor:
            parts = flat.split(sizes)
            p = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
            return self.loss(functional_call(self.model, p, inputs), labels).sum()

        def one(v: Tensor) -> Tensor:
            return jvp(grad(total), (theta,), (v,))[1]

        with torch.no_grad(), twice_differentiable():
            if self.uses_forward_ad(lambda: one(vectors[0])):
                return vmap(one, chunk_size=chunk_size)(vectors)
            _, pullback = vjp(grad(total), theta)[:2]
            return vmap(lambda v: pullback(v)[0], chunk_size=chunk_size)(vectors)

    def hvp_chunk(self, inputs: tuple[Tensor, ...], wanted: int) -> int:
        """`wanted`, capped so that a chunk of products fits `HVP_CHUNK_BYTES`."""
        per_product = HVP_COPIES * max(1, self.activation_bytes(inputs))
        return max(1, min(wanted, HVP_CHUNK_BYTES // per_product))

    def examples_per_pass(self, inputs: tuple[Tensor, ...], products: int = 1) -> int:
        """Examples of the batch whose `products` vectorised products fit `HVP_CHUNK_BYTES`.

        At least one: e.g. efficientnet_b0 at 224x224 keeps 76 MB of module outputs per
        example, so that one product of a 32-example batch would take about 23 GB.
        """
        n = len(inputs[0])
        per_example = max(1, self.activation_bytes(inputs) // max(1, n) * products)
        return max(1, min(n, HVP_CHUNK_BYTES // (HVP_COPIES * per_example)))

    def activation_bytes(self, inputs: tuple[Tensor, ...]) -> int:
        """Bytes of all leaf modules' outputs in one forward pass (measured once per shape)."""
        key = tuple((tuple(x.shape), x.dtype) for x in inputs)
        if key not in self._activation_bytes:
            total = 0

            def count(module, args, out) -> None:
                nonlocal total
                for t in out if isinstance(out, (tuple, list)) else (out,):
                    if isinstance(t, Tensor):
                        total += t.numel() * t.element_size()

            leaves = [m for m in self.model.modules() if next(m.children(), None) is None]
            handles = [m.register_forward_hook(count) for m in leaves]
            try:
                with torch.no_grad():
                    self.model(*inputs)
            finally:
                for h in handles:
                    h.remove()
            self._activation_bytes[key] = total
        return self._activation_bytes[key]

    def hessian(
        self, inputs: tuple[Tensor, ...], labels: Tensor, names: list[str], chunk_size: int
    ) -> Tensor:
        """Dense Hessian `Tensor [P, P]` of the batch's SUMMED loss w.r.t. `names`."""
        numel = sum(self.params[n].numel() for n in names)
        dtype = self.params[names[0]].dtype
        eye = torch.eye(numel, dtype=dtype, device=self.params[names[0]].device)
        return self.hvp(inputs, labels, names, eye, chunk_size)


def _sub_batches(inputs: tuple[Tensor, ...], labels: Tensor, step: int):
    """`(inputs, labels)` of consecutive sub-batches of at most `step` examples."""
    for lo in range(0, len(labels), step):
        yield tuple(x[lo : lo + step] for x in inputs), labels[lo : lo + step]


def _block_tangents(params: Params, blocks: list[list[str]], seed: int) -> Params:
    """One random direction per block, zero outside it: `Tensor [n_blocks, *shape]` per name.

    Block b's direction is drawn from a generator seeded with `seed`, over its parameters
    in order (the same direction whichever other blocks are probed with it).
    """
    tangents = {n: torch.zeros(len(blocks), *p.shape, dtype=p.dtype) for n, p in params.items()}
    for b, block in enumerate(blocks):
        gen = torch.Generator(device="cpu").manual_seed(seed)
        for n in block:
            tangents[n][b] = torch.randn(params[n].shape, generator=gen, dtype=params[n].dtype)
    return {n: t.to(params[n].device) for n, t in tangents.items()}


def _ratio(r_v: Params, gn_v: Params, b: int, block: list[str]) -> float:
    """`‖R v_b‖ / ‖G v_b‖` over block b's rows: 0.0 where R's part vanishes."""
    r_norm = torch.sqrt(tensor_sum((r_v[n][b].double() ** 2).sum() for n in block))
    gn_norm = torch.sqrt(tensor_sum((gn_v[n][b].double() ** 2).sum() for n in block))
    if r_norm == 0:
        return 0.0
    return float(r_norm / gn_norm) if gn_norm > 0 else float("inf")


def _fingerprint(inputs: tuple[Tensor, ...], labels: Tensor) -> tuple:
    """A cheap identity of a batch: shapes and sums of its tensors."""
    return tuple((tuple(t.shape), float(t.double().sum())) for t in (*inputs, labels))


def _dot(a: Params, b: Params) -> Tensor:
    return tensor_sum((a[n] * b[n]).sum() for n in a)


def flatten(tensors, start_dim: int = 0) -> Tensor:
    """Concatenates tensors flattened from `start_dim` on (keeps leading dims)."""
    return torch.cat([t.flatten(start_dim) for t in tensors], dim=start_dim)
