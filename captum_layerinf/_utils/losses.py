"""Per-example losses: every loss is turned into one that returns a loss per example."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

PerExampleLoss = Callable[[Tensor, Tensor], Tensor]

# Losses whose labels are class indices: checked for dtype, shape and range.
_INDEX_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MultiMarginLoss)


class ExampleLoss:
    """A loss returning one value per example, with label checks for class-index losses.

    Args:
        loss_fn: None (cross-entropy), a loss module with a `reduction` attribute (any
            reduction: a copy with `reduction="none"` is used, so class weights count per
            example), or a callable `(outputs, labels) -> Tensor [B]`.
    """

    def __init__(self, loss_fn: nn.Module | PerExampleLoss | None = None) -> None:
        if loss_fn is None:
            loss_fn = nn.CrossEntropyLoss()
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable; got {type(loss_fn).__name__}.")
        if isinstance(loss_fn, nn.Module) and hasattr(loss_fn, "reduction"):
            loss_fn = copy.copy(loss_fn)
            loss_fn.reduction = "none"
        self.fn = loss_fn
        self.class_indices = isinstance(loss_fn, _INDEX_LOSSES)

    def __call__(self, outputs: Tensor, labels: Tensor) -> Tensor:
        """Returns the losses `Tensor [B]` of a batch."""
        losses = self.fn(outputs, labels)
        if losses.shape != outputs.shape[:1]:
            raise ValueError(
                f"loss_fn must return one loss per example, shape [{outputs.shape[0]}]; got "
                f"shape {tuple(losses.shape)}. Use reduction='none', or pass a loss module "
                "with a `reduction` attribute."
            )
        return losses

    def single(self, output: Tensor, label: Tensor) -> Tensor:
        """Loss of one example (no batch dimension), for torch.func transforms."""
        return self.fn(output.unsqueeze(0), label.unsqueeze(0)).squeeze(0)

    def check_labels(self, labels: Tensor, outputs: Tensor, what: str) -> None:
        """Raises a clear error when labels cannot be the targets of this loss."""
        n = outputs.shape[0]
        if labels.dim() == 0 or labels.shape[0] != n:
            raise ValueError(
                f"`{what}`: got {tuple(labels.shape)} labels for {n} examples; "
                "the labels are the last element of each batch, one per example."
            )
        if outputs.dim() != 2:
            raise ValueError(
                f"the model must return logits of shape [batch, classes]; got "
                f"{tuple(outputs.shape)}."
            )
        if not self.class_indices:
            return
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(
                f"`{what}`: labels must be integer class indices (torch.long); got "
                f"{labels.dtype}. Pass labels.long(), or labels.argmax(1) for one-hot labels."
            )
        if labels.dim() != 1:
            raise ValueError(
                f"`{what}`: labels must have shape [{n}] (one class index per example); got "
                f"{tuple(labels.shape)}. For one-hot labels pass labels.argmax(1)."
            )
        n_classes = outputs.shape[1]
        if labels.min() < 0 or labels.max() >= n_classes:
            raise ValueError(
                f"`{what}`: labels must lie in [0, {n_classes - 1}] for a model with "
                f"{n_classes} outputs; got range [{int(labels.min())}, {int(labels.max())}]."
            )
