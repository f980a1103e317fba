"""Per-example gradients, logit Jacobians and Hessian products with torch.func."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, jacrev, jvp, vjp, vmap

from .._utils.losses import ExampleLoss

Params = dict[str, Tensor]


@dataclass
class LogitCurvature:
    """Pieces of the Gauss-Newton block of one batch.

    Attributes:
        jacobians: Per-example logit Jacobians, `Tensor [B, C, *param.shape]` per parameter.
        loss_hessian: Hessian of each example's loss w.r.t. its logits, `Tensor [B, C, C]`.
    """

    jacobians: Params
    loss_hessian: Tensor


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
        """Per-example loss gradients, `Tensor [B, *param.shape]` per parameter name."""
        in_dims = (None,) + (0,) * (len(inputs) + 1)
        with torch.no_grad():
            g, _ = vmap(grad_and_value(self._loss_one), in_dims=in_dims)(
                self._select(names), *inputs, labels
            )
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
        """Per-example logit Jacobians and loss Hessians w.r.t. the logits."""
        in_dims = (None,) + (0,) * len(inputs)
        with torch.no_grad():
            jac = vmap(jacrev(self._forward_one), in_dims=in_dims)(self._select(names), *inputs)
            logits = self.model(*inputs)
            lam = vmap(torch.func.hessian(self.loss.single))(logits, labels)
        return LogitCurvature(jac, lam)

    def curvature_residual(
        self, inputs: tuple[Tensor, ...], labels: Tensor, names: list[str], seed: int = 0
    ) -> float:
        """Relative size of the Hessian term that Gauss-Newton leaves out, on one batch.

        The Hessian of the loss w.r.t. parameters is `Jᵀ Λ J + Σ_c (∂L/∂f_c) ∇²f_c`. The
        second term vanishes when the logits are piecewise linear in these parameters
        (ReLU, max-pool, eval-mode batch-norm after the layer). Returns `‖R v‖ / ‖Jᵀ Λ J v‖`
        for a random `v`, where `R` is that second term: 0.0 means Gauss-Newton is exact.
        """
        params = self._select(names)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = {
            n: torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
            for n, p in params.items()
        }

        def forward(p: Params) -> Tensor:
            return functional_call(self.model, p, inputs)

        with torch.no_grad():
            logits, jv = jvp(forward, (params,), (v,))
            dlogits = vmap(grad(self.loss.single))(logits, labels)
            lam = vmap(torch.func.hessian(self.loss.single))(logits, labels)
            _, pullback = vjp(forward, params)
            (gn_v,) = pullback(torch.einsum("bcd,bd->bc", lam, jv))

            def weighted(p: Params) -> Tensor:
                return (forward(p) * dlogits).sum()

            _, r_v = jvp(grad(weighted), (params,), (v,))
        r_norm = torch.sqrt(sum((t.double() ** 2).sum() for t in r_v.values()))
        gn_norm = torch.sqrt(sum((t.double() ** 2).sum() for t in gn_v.values()))
        if r_norm == 0:
            return 0.0
        return float(r_norm / gn_norm) if gn_norm > 0 else float("inf")

    def hvp(
        self,
        inputs: tuple[Tensor, ...],
        labels: Tensor,
        names: list[str],
        vectors: Tensor,
        chunk_size: int | None = None,
    ) -> Tensor:
        """Hessian of the batch's SUMMED loss w.r.t. `names` times each row of `vectors [m, P]`."""
        params = self._select(names)
        shapes = [p.shape for p in params.values()]
        sizes = [p.numel() for p in params.values()]
        theta = flatten(params.values())

        def total(flat: Tensor) -> Tensor:
            parts = flat.split(sizes)
            p = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
            return self.loss(functional_call(self.model, p, inputs), labels).sum()

        def one(v: Tensor) -> Tensor:
            return jvp(grad(total), (theta,), (v,))[1]

        with torch.no_grad():
            return vmap(one, chunk_size=chunk_size)(vectors.to(theta.dtype))

    def hessian(
        self, inputs: tuple[Tensor, ...], labels: Tensor, names: list[str], chunk_size: int
    ) -> Tensor:
        """Dense Hessian `Tensor [P, P]` of the batch's SUMMED loss w.r.t. `names`."""
        numel = sum(self.params[n].numel() for n in names)
        dtype = self.params[names[0]].dtype
        eye = torch.eye(numel, dtype=dtype, device=self.params[names[0]].device)
        return self.hvp(inputs, labels, names, eye, chunk_size)


def flatten(tensors, start_dim: int = 0) -> Tensor:
    """Concatenates tensors flattened from `start_dim` on (keeps leading dims)."""
    return torch.cat([t.flatten(start_dim) for t in tensors], dim=start_dim)
