"""Independent reference computations: explicit loops and torch.func.hessian, no engine code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call


def flat_params(model: nn.Module, names: list[str]) -> tuple[Tensor, callable]:
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].detach().flatten() for n in names])

    def unflatten(v: Tensor) -> dict[str, Tensor]:
        return {n: t.view(s) for n, t, s in zip(names, v.split(sizes), shapes, strict=True)}

    return flat, unflatten


def dense_hessian(model: nn.Module, x: Tensor, y: Tensor, names: list[str]) -> Tensor:
    """Hessian [P, P] of the MEAN cross-entropy over (x, y) w.r.t. `names`."""
    flat, unflatten = flat_params(model, names)

    def mean_loss(v: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(model, unflatten(v), (x,)), y)

    return torch.func.hessian(mean_loss)(flat)


def dense_gauss_newton(model: nn.Module, x: Tensor, y: Tensor, names: list[str]) -> Tensor:
    """Gauss-Newton matrix [P, P] of the MEAN cross-entropy: mean of J_iᵀ (diag p - p pᵀ) J_i."""
    flat, unflatten = flat_params(model, names)
    jac = torch.func.jacrev(lambda v: functional_call(model, unflatten(v), (x,)))(flat)
    p = torch.softmax(model(x), dim=1).detach()
    lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("icp,icd,idq->pq", jac, lam, jac) / len(y)


def looped_grads(model: nn.Module, x: Tensor, y: Tensor, names: list[str]) -> Tensor:
    """Per-example gradients [n, P], one autograd call per example."""
    params = dict(model.named_parameters())
    wanted = [params[n] for n in names]
    flags = [p.requires_grad for p in wanted]
    for p in wanted:
        p.requires_grad_(True)
    rows = []
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, wanted)]))
    for p, f in zip(wanted, flags, strict=True):
        p.requires_grad_(f)
    return torch.stack(rows)


def reference_scores(
    model, train, test, names: list[str], damping: float, matrix=dense_hessian
) -> Tensor:
    """∇L(test)ᵀ (H + λI)⁻¹ ∇L(train) with a dense `matrix` (default: the Hessian):
    Tensor [n_test, n_train]."""
    (xtr, ytr), (xte, yte) = train.tensors, test.tensors
    hess = matrix(model, xtr, ytr, names)
    damped = hess + damping * torch.eye(len(hess), dtype=hess.dtype)
    g_train = looped_grads(model, xtr, ytr, names)
    g_test = looped_grads(model, xte, yte, names)
    return g_test @ torch.linalg.solve(damped, g_train.T)


def layer_names_of(model: nn.Module, layer: str) -> list[str]:
    return [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[0] == layer]
