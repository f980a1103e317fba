"""Retraining from the optimum: the ground truth that influence estimates predict.

Koh & Liang (2017, Sec. 5.1) validate influence by removing one training example,
retraining from the original optimum with full-batch L-BFGS, and measuring the change of the
test loss. Retraining is never exact, so the same procedure run with nothing removed gives
the baseline the change is measured from ("drift" = baseline - optimum, reported).

Where the objective is badly conditioned (curvature from below the weight decay to ~1e2),
plain L-BFGS stalls at a gradient far above the effect of one removal. With
`preconditioner=` L-BFGS runs in whitened coordinates `θ = θ₀ + L⁻ᵀ u`, `L Lᵀ = P`, P a
fixed positive-definite curvature matrix of the full training objective: a linear change
of variables, so the minimiser is the same, and where `L⁻¹ H L⁻ᵀ` is close to the identity
(near a minimum, H the Hessian) a few iterations reach a gradient near round-off. At a
point that is not a minimum (negative Hessian eigenvalues, as after polishing a small ReLU
CNN) no positive-definite P helps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from captum_layerinf._utils.losses import ExampleLoss

Retrain = Callable[[nn.Module, Tensor, int], nn.Module]
"""`retrain(model, keep, seed) -> model`: trains `model` (a copy of the optimum, free to be
changed in place) on the training examples where the bool mask `keep [n_train]` is True."""


@dataclass
class LBFGSRetrain:
    """Full-batch L-BFGS on `(1/n) Σ_j keep_j L(z_j) + wd/2 ||θ||²`, warm-started.

    Removing examples zeroes their weight but keeps the `1/n` normalisation, so with
    `damping = weight_decay` the influence convention of `LayerInfluence` (Hessian of the
    mean training loss) is exactly the objective's. The model is optimised as it is
    (call `.eval()` first for batch-norm: running statistics are then constants).

    Args:
        inputs: Training inputs `Tensor [n_train, ...]`, on the model's device.
        labels: Training labels `Tensor [n_train]`.
        weight_decay: L2 coefficient `wd` of the objective.
        iters: Most L-BFGS iterations per retraining.
        loss_fn: Per-example loss (as `LayerInfluence`'s); default cross-entropy.
        history_size: L-BFGS memory.
        tol: Convergence test: stop early once the largest absolute entry of the
            objective's gradient is at most `tol` (default 1e-12: in practice, run `iters`).
        log: One `(iterations, max |gradient|)` per retraining, appended by each call: the
            evidence that retraining converged (report it beside the drift).
        preconditioner: None (plain L-BFGS on the parameters), `"gauss-newton"` or
            `"hessian"`: L-BFGS on `u` with `θ = θ₀ + L⁻ᵀ u` (θ₀ the starting point of each
            call), `L Lᵀ = P` a fixed curvature matrix of the full-data objective:
            `"gauss-newton"`: `P = (1/n) Σ_j J_jᵀ Λ_j J_j + (wd + precondition_damping) I`
            (J_j the Jacobian of example j's outputs, Λ_j the Hessian of its loss w.r.t.
            them), cheap (one Jacobian per example); `"hessian"`: the objective's own
            Hessian (dense, from Hessian-vector products), eigenvalues replaced by their
            absolute values and floored at `precondition_damping` (if 0: 1e-10 times the
            largest), which is the better choice where the loss's second-order term is not
            negligible next to `wd`. P is formed once, on the first call, at the model
            passed in (the full-data optimum when retraining from it;
            `fit_preconditioner` refits it) and then held fixed. A change of variables
            changes the path, not the minimiser. Dense: `[n_params, n_params]`, float64.
        precondition_damping: See `preconditioner`.
        factor: The lower Cholesky factor L of P (set by `fit_preconditioner`).
        hessian_eigenvalues: With `"hessian"`: the smallest and largest eigenvalue of the
            Hessian where P was formed (a negative one: that point is not a minimum).
    """

    inputs: Tensor
    labels: Tensor
    weight_decay: float
    iters: int = 100
    loss_fn: nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None
    history_size: int = 50
    tol: float = 1e-12
    log: list[tuple[int, float]] = field(default_factory=list, repr=False, compare=False)
    preconditioner: Literal["gauss-newton", "hessian"] | None = None
    precondition_damping: float = 0.0
    factor: Tensor | None = field(default=None, repr=False, compare=False)
    hessian_eigenvalues: tuple[float, float] | None = field(default=None, compare=False)

    def objective(self, model: nn.Module, weights: Tensor) -> Tensor:
        """The weighted training objective at the model's current parameters."""
        losses = ExampleLoss(self.loss_fn)(model(self.inputs), self.labels)
        reg = sum((p**2).sum() for p in model.parameters() if p.requires_grad)
        return (weights * losses).sum() / len(self.labels) + 0.5 * self.weight_decay * reg

    def __call__(self, model: nn.Module, keep: Tensor, seed: int = 0) -> nn.Module:
        """Retrains `model` in place on the kept examples and returns it.

        The seed is unused: full-batch L-BFGS is deterministic.
        """
        weights = keep.to(next(model.parameters()).dtype)
        if self.preconditioner is not None:
            return self._whitened(model, weights)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.LBFGS(
            params,
            max_iter=self.iters,
            history_size=self.history_size,
            tolerance_grad=self.tol,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )

        def closure():
            opt.zero_grad()
            loss = self.objective(model, weights)
            loss.backward()
            return loss

        opt.step(closure)
        closure()  # the gradient where the optimiser stopped
        grad = max(float(p.grad.abs().max()) for p in params if p.grad is not None)
        self.log.append((int(opt.state[params[0]]["n_iter"]), grad))
        opt.zero_grad()
        return model

    def fit_preconditioner(self, model: nn.Module) -> Tensor:
        """Forms P at the model's parameters (all examples kept) and stores its factor."""
        if self.preconditioner == "gauss-newton":
            mat = gauss_newton_matrix(model, self.inputs, self.labels, self.loss_fn)
            mat.diagonal().add_(self.weight_decay + self.precondition_damping)
        elif self.preconditioner == "hessian":
            hess = objective_hessian(
                model, self.inputs, self.labels, self.weight_decay, self.loss_fn
            )
            values, vectors = torch.linalg.eigh(hess)
            self.hessian_eigenvalues = (float(values[0]), float(values[-1]))
            floor = self.precondition_damping or 1e-10 * float(values.abs().max())
            mat = (vectors * values.abs().clamp_min(floor)) @ vectors.T
            mat = (mat + mat.T) / 2
        else:
            raise ValueError(
                f"preconditioner must be None, 'gauss-newton' or 'hessian'; "
                f"got {self.preconditioner!r}"
            )
        self.factor = torch.linalg.cholesky(mat)
        return self.factor

    def _whitened(self, model: nn.Module, weights: Tensor) -> nn.Module:
        """L-BFGS on u, θ = θ₀ + L⁻ᵀ u; stops once max |∂f/∂θ| <= tol."""
        if self.factor is None:
            self.fit_preconditioner(model)
        assert self.factor is not None
        named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
        dtype = named[0][1].dtype
        chol = self.factor.to(dtype)
        theta0 = torch.cat([p.detach().flatten() for _, p in named])
        u = torch.zeros_like(theta0, requires_grad=True)
        loss_fn, n = ExampleLoss(self.loss_fn), len(self.labels)

        def theta_of(v: Tensor) -> Tensor:
            step = torch.linalg.solve_triangular(chol.T, v[:, None], upper=True)[:, 0]
            return theta0 + step

        def evaluate(v: Tensor) -> tuple[Tensor, Tensor]:
            theta = theta_of(v).requires_grad_()
            out = functional_call(model, _unflatten(named, theta), (self.inputs,))
            losses = loss_fn(out, self.labels)
            loss = (weights * losses).sum() / n + 0.5 * self.weight_decay * (theta**2).sum()
            (gradient,) = torch.autograd.grad(loss, theta)
            return loss.detach(), gradient

        opt = torch.optim.LBFGS(
            [u],
            max_iter=self.iters,
            history_size=self.history_size,
            tolerance_grad=0,
            tolerance_change=0,
            line_search_fn="strong_wolfe",
        )

        def closure():
            loss, gradient = evaluate(u.detach())
            # ∂f/∂u = L⁻¹ ∂f/∂θ; a zero gradient tells L-BFGS to stop (θ-space test).
            if gradient.abs().max() <= self.tol:
                u.grad = torch.zeros_like(u)
            else:
                u.grad = torch.linalg.solve_triangular(chol, gradient[:, None], upper=False)[:, 0]
            return loss

        opt.step(closure)
        with torch.no_grad():
            theta = theta_of(u.detach())
            start = 0
            for _, p in named:
                p.copy_(theta[start : start + p.numel()].view_as(p))
                start += p.numel()
        _, gradient = evaluate(u.detach())
        self.log.append((int(opt.state[u].get("n_iter", 0)), float(gradient.abs().max())))
        return model


def _unflatten(named: Sequence[tuple[str, Tensor]], flat: Tensor) -> dict[str, Tensor]:
    out, start = {}, 0
    for name, p in named:
        out[name] = flat[start : start + p.numel()].view_as(p)
        start += p.numel()
    return out


def gauss_newton_matrix(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    loss_fn: nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None,
    chunk: int = 50,
) -> Tensor:
    """`(1/n) Σ_j J_jᵀ Λ_j J_j` over the trainable parameters, dense, float64.

    J_j: Jacobian of example j's flattened outputs w.r.t. the parameters (flattened in
    `named_parameters` order); Λ_j: Hessian of its loss w.r.t. those outputs (the
    positive semi-definite part). The model is evaluated as it is (`.eval()` for batch-norm).

    Returns:
        `Tensor [n_params, n_params]`.
    """
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().flatten() for _, p in named])
    example_loss = ExampleLoss(loss_fn)

    def outputs(theta: Tensor, x: Tensor) -> Tensor:
        return functional_call(model, _unflatten(named, theta), (x.unsqueeze(0),)).flatten()

    gn = torch.zeros(len(flat), len(flat), dtype=torch.float64, device=flat.device)
    for start in range(0, len(labels), chunk):
        x, y = inputs[start : start + chunk], labels[start : start + chunk]
        jac = vmap(jacrev(outputs), in_dims=(None, 0))(flat, x).double()  # [b, C, p]
        with torch.no_grad():
            factor = example_loss.output_hessian_factor(model(x), y)  # [b, C, C]
        rows = (factor.transpose(1, 2) @ jac).flatten(0, 1)  # [b C, p]
        gn.addmm_(rows.T, rows)
    return gn / len(labels)


def objective_hessian(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    weight_decay: float,
    loss_fn: nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None,
    chunk: int = 50,
) -> Tensor:
    """The Hessian of `(1/n) Σ_j L(z_j) + wd/2 ||θ||²`, dense, float64, symmetrised.

    One Hessian-vector product per parameter (`chunk` of them batched with `vmap`): for
    models of a few thousand parameters.

    Returns:
        `Tensor [n_params, n_params]`, parameters in `named_parameters` order.
    """
    named = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().flatten() for _, p in named])
    example_loss = ExampleLoss(loss_fn)

    def objective(theta: Tensor) -> Tensor:
        out = functional_call(model, _unflatten(named, theta), (inputs,))
        return example_loss(out, labels).mean() + 0.5 * weight_decay * (theta**2).sum()

    gradient = grad(objective)
    eye = torch.eye(len(flat), dtype=flat.dtype, device=flat.device)
    rows = [
        vmap(lambda v: jvp(gradient, (flat,), (v,))[1])(eye[start : start + chunk])
        for start in range(0, len(flat), chunk)
    ]
    hess = torch.cat(rows).double()
    return (hess + hess.T) / 2


def losses_on(model: nn.Module, test: tuple[Tensor, ...], loss_fn=None) -> Tensor:
    """Per-example losses `Tensor [n_test]` of `model` on `test = (*inputs, labels)`."""
    with torch.no_grad():
        return ExampleLoss(loss_fn)(model(*test[:-1]), test[-1]).double().cpu()


def retrained_losses(
    model: nn.Module,
    retrain: Retrain,
    keep: Tensor,
    test: tuple[Tensor, ...],
    seeds: tuple[int, ...],
    loss_fn=None,
) -> Tensor:
    """Test losses after retraining a copy of `model` on `keep`, averaged over seeds.

    Returns:
        `Tensor [n_test]` (float64).
    """
    out = []
    for seed in seeds:
        retrained = retrain(copy.deepcopy(model), keep, seed)
        out.append(losses_on(retrained, test, loss_fn))
    return torch.stack(out).mean(0)
