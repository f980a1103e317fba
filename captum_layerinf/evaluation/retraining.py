"""Retraining from the optimum: the ground truth that influence estimates predict.

Koh & Liang (2017, Sec. 5.1) validate influence by removing one training example,
retraining from the original optimum with full-batch L-BFGS, and measuring the change of the
test loss. Retraining is never exact, so the same procedure run with nothing removed gives
the baseline the change is measured from ("drift" = baseline - optimum, reported).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

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
    """

    inputs: Tensor
    labels: Tensor
    weight_decay: float
    iters: int = 100
    loss_fn: nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None
    history_size: int = 50
    tol: float = 1e-12
    log: list[tuple[int, float]] = field(default_factory=list, repr=False, compare=False)

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
