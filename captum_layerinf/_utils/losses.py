"""Per-example losses: every loss is turned into one that returns a loss per example.

The rule, as in Captum: the per-example losses of a batch, `ℓ_i` for i = 1..n, are what
the loss gives with `reduction="none"`, reduced over every non-batch dimension (a loss of
an output `[n, k]` or `[n, H, W]` is one number per example) so that they add up to the
loss module's own value:

- a loss module with `reduction="mean"` (the torch default, e.g. `nn.MSELoss()`): the mean
  over the non-batch dimensions (its batch value is the mean of the `ℓ_i`);
- a loss module with `reduction="sum"` or `"none"`, and a plain function
  `loss_fn(outputs, targets)` returning `[n]` or `[n, ...]`: the sum over them.

Cross-entropy-type losses (class indices) keep one value per example: their reduction
does not change the per-example loss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import hessian, vmap

PerExampleLoss = Callable[[Tensor, Tensor], Tensor]

# Losses whose targets may be class indices: checked for dtype, shape and range.
_INDEX_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss)


class ExampleLoss:
    """A loss returning one value per example, with target checks for class-index losses.

    Args:
        loss_fn: None (cross-entropy), a loss module with a `reduction` attribute (any
            reduction: a copy with `reduction="none"` is used, so class weights count per
            example), or a callable `(outputs, targets) -> Tensor [n]` or `[n, ...]`.
            See the module docstring for how non-batch dimensions are reduced.
    """

    def __init__(self, loss_fn: nn.Module | PerExampleLoss | None = None) -> None:
        if loss_fn is None:
            loss_fn = nn.CrossEntropyLoss()
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
        self.mean_over_dims = False
        if isinstance(loss_fn, nn.Module) and hasattr(loss_fn, "reduction"):
            self.mean_over_dims = loss_fn.reduction == "mean"
            loss_fn = copy.copy(loss_fn)
            # nn.Module types unknown attributes as Tensor | Module
            setattr(loss_fn, "reduction", "none")  # noqa: B010
        self.fn = loss_fn
        self.class_indices = isinstance(loss_fn, _INDEX_LOSSES)

    def _targets(self, labels: Tensor) -> Tensor:
        """Class indices of any integer dtype as torch.long, which torch's losses require."""
        if (
            self.class_indices
            and not labels.dtype.is_floating_point
            and labels.dtype not in (torch.long, torch.bool)
        ):
            return labels.long()
        return labels

    def __call__(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Returns the losses `Tensor [n]` of a batch of outputs `[n, ...]`."""
        return self._reduce(self.fn(outputs, self._targets(labels)), outputs.shape[0])

    def _reduce(self, losses: Any, n: int) -> Tensor:
        if not isinstance(losses, Tensor) or losses.dim() == 0 or losses.shape[0] != n:
            shape = tuple(losses.shape) if isinstance(losses, Tensor) else type(losses).__name__
            raise ValueError(
                f"loss_fn must return one loss per example, shape [{n}] or [{n}, ...]; got "
                f"{shape}. A function must not reduce over the batch (return e.g. "
                "((outputs - targets) ** 2).sum(1), not .mean()); a loss module needs a "
                "`reduction` attribute."
            )
        if losses.dim() == 1:
            return losses
        flat = losses.flatten(1)
        return flat.mean(1) if self.mean_over_dims else flat.sum(1)

    def single(self, output: Tensor, label: Tensor) -> Tensor:
        """Loss of one example (no batch dimension), for torch.func transforms."""
        return self(output.unsqueeze(0), label.unsqueeze(0)).squeeze(0)

    def output_hessian(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Hessian of each example's loss w.r.t. its own outputs, by autograd.

        Gauss-Newton blocks `Jᵀ Λ J` take Λ from here, so they use the loss's own curvature:
        the softmax Hessian `diag(p) - p pᵀ` for cross-entropy (with or without label
        smoothing), `2 I / k` for `nn.MSELoss()` on `[n, k]` outputs (`2 I` with
        `reduction="sum"`), `diag(σ(1 - σ)) / k` for `nn.BCEWithLogitsLoss()`, zero almost
        everywhere for `nn.L1Loss()` (Gauss-Newton then keeps only the damping), and for a
        user function whatever its second derivatives are.

        Args:
            outputs: Model outputs `Tensor [n, ...]`.
            labels: Targets of the batch.

        Returns:
            `Tensor [n, C, C]` with `C` the number of outputs per example (non-batch
            dimensions flattened in row-major order).
        """
        shape = outputs.shape[1:]

        def flat_loss(out: Tensor, label: Tensor) -> Tensor:
            return self.single(out.view(shape), label)

        with torch.no_grad():
            return vmap(hessian(flat_loss))(outputs.detach().reshape(len(outputs), -1), labels)

    def output_hessian_factor(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Columns whose outer products sum to each example's output Hessian.

        `Λ_b = Σ_j F[b, :, j] F[b, :, j]ᵀ`, columns by decreasing eigenvalue; negative
        eigenvalues (a loss that is not convex in the outputs) are set to zero, which keeps
        the positive semi-definite part (the generalised Gauss-Newton matrix).

        Returns:
            `Tensor [n, C, C]` in float64, C as in `output_hessian`; column j of example b,
            reshaped to the outputs' shape, is a cotangent for a backward pass.
        """
        lam = self.output_hessian(outputs, labels).double()
        values, vectors = torch.linalg.eigh((lam + lam.transpose(1, 2)) / 2)
        values, vectors = values.flip(1).clamp_min(0), vectors.flip(2)
        return vectors * values.sqrt()[:, None, :]

    def check_labels(self, labels: Tensor, outputs: Any, what: str) -> None:
        """Raises a clear error when the outputs or labels cannot go into this loss."""
        if not isinstance(outputs, Tensor):
            raise TypeError(
                f"the model returned a {type(outputs).__name__}, not a tensor of outputs "
                "[batch, ...]; pass output_fn= to pick the tensor the loss is computed on, "
                "e.g. output_fn=lambda out: out[0] for a tuple or "
                "output_fn=lambda out: out['logits'] for a dict or a HuggingFace output."
            )
        n = outputs.shape[0] if outputs.dim() else None
        if labels.dim() == 0 or labels.shape[0] != n:
            raise ValueError(
                f"`{what}`: got {tuple(labels.shape)} labels for model outputs of shape "
                f"{tuple(outputs.shape)}; the labels are the last element of each batch, "
                "one per example (the outputs need the batch as first dimension)."
            )
        if not self.class_indices:
            return
        if outputs.dim() != 2:
            raise ValueError(
                f"{type(self.fn).__name__} needs logits of shape [batch, classes]; got "
                f"{tuple(outputs.shape)}. For another output pass its loss, e.g. "
                "loss_fn=nn.MSELoss() for regression."
            )
        n_classes = outputs.shape[1]
        if (
            isinstance(self.fn, nn.CrossEntropyLoss)
            and labels.dtype.is_floating_point
            and labels.shape == outputs.shape
        ):
            return  # class probabilities, as nn.CrossEntropyLoss accepts them
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(
                f"`{what}`: labels must be integer class indices (torch.long); got "
                f"{labels.dtype}. Pass labels.long(), or labels.argmax(1) for one-hot labels "
                "(cross-entropy also takes float class probabilities of shape [batch, classes])."
            )
        if labels.dim() != 1:
            fix = (
                "Pass labels.squeeze(1)."
                if labels.dim() == 2 and labels.shape[1] == 1
                else "For one-hot labels pass labels.argmax(1)."
            )
            raise ValueError(
                f"`{what}`: labels must have shape [{n}] (one class index per example); got "
                f"{tuple(labels.shape)}. {fix}"
            )
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(
                f"`{what}`: labels must lie in [0, {n_classes - 1}] for a model with "
                f"{n_classes} outputs; got range [{int(labels.min())}, {int(labels.max())}]."
            )
