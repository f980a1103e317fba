"""Fidelity check: how well a strategy agrees with a reference, layer by layer, cheaply.

By default both the checked strategy and the reference are fitted on the curvature of the
same small random subset of the training set (`n_curvature` examples), so the check measures
the strategy's approximation (e.g. EK-FAC's Kronecker structure against the block it
approximates) at a fraction of the cost of the call it checks. The default reference,
"auto", needs neither forward-mode AD nor TorchScript for Linear/Conv2d layers: per block

- where the checked strategy is itself exact on a block, or builds its dense
  Gauss-Newton block, its fit is the reference there (deterministic on the same data);
- a Linear/Conv2d block uses the exact damped Gauss-Newton block of the subset,
  `G = (1/m) Σ_i J_iᵀ Λ_i J_i`, inverted exactly by the Woodbury identity from its
  `m x k` rows `Λ_i^{1/2} J_i` (k: the loss Hessian's rank in the logits), each a
  per-example gradient from one reverse pass; it equals the Hessian block where the logits
  are piecewise linear in the layer (ReLU, max-pool, eval-mode batch-norm after it), and is
  what EK-FAC approximates elsewhere;
- any other block is built exactly when its dense float64 matrix fits
  `REFERENCE_DENSE_BYTES`, else solved by CG on the subset.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from .._utils.data import as_dataloader, iter_batches
from .._utils.stats import pearson, spearman
from ._reference import ReferenceStrategy, plan_groups
from .strategies import CurvatureStrategy, FitContext, make_strategy

Fitted = tuple[CurvatureStrategy, FitContext]


@dataclass(frozen=True)
class CheckedRun:
    """The influence computation a check measures, as explicit values and callables.

    Attributes:
        train_loader: The training batches.
        n_train: Number of training examples.
        batch_size: Batch size of the sampled examples.
        layer_names: The layers, one row of the report each.
        damping: λ, also the reference's.
        query_rank: The test side's rank (see `CurvatureStrategy.scores`).
        fitted: `fitted()`: the strategy fitted on the whole training set, and its context.
        fit_on: `fit_on(loader, n)`: a fresh strategy fitted on `n` training examples.
        subset_ok: Whether the strategy's scores of examples outside a curvature subset
            are right (`CurvatureStrategy.scores_outside_curvature`); if not, the check
            fits it on the whole training set whatever `n_curvature` says.
    """

    train_loader: DataLoader
    n_train: int
    batch_size: int
    layer_names: list[str]
    damping: float
    query_rank: int | None
    fitted: Callable[[], Fitted]
    fit_on: Callable[[DataLoader, int], Fitted]
    subset_ok: bool = True


@dataclass(frozen=True)
class FidelityReport:
    """Per-layer agreement of a strategy's scores with a reference strategy's.

    Attributes:
        layers: Layer names.
        strategy: The strategy checked.
        reference: The reference strategy ("auto": exact, Woodbury Gauss-Newton or CG per
            block; see the module docstring).
        pearson: Pearson correlation per layer over all sampled (test, train) pairs.
        spearman: Spearman rank correlation per layer.
        scale: Least-squares slope of the strategy's scores on the reference's per layer
            (1.0: same scale).
        test_indices: The sampled test examples.
        train_indices: The sampled training examples.
        curvature_indices: The training examples whose curvature both strategies used
            (all of them when `n_curvature` is None or covers the training set).
        seconds: Wall time of the check.
    """

    layers: list[str]
    strategy: str
    reference: str
    pearson: Tensor
    spearman: Tensor
    scale: Tensor
    test_indices: Tensor
    train_indices: Tensor
    curvature_indices: Tensor
    seconds: float = float("nan")

    def __str__(self) -> str:
        rows = [
            f"{self.strategy} vs {self.reference} (curvature of {len(self.curvature_indices)} "
            f"training examples, {self.seconds:.1f} s):",
            "layer | Pearson | Spearman | scale",
        ]
        for name, p, s, k in zip(self.layers, self.pearson, self.spearman, self.scale, strict=True):
            rows.append(f"{name or '<model>'} | {p:.3f} | {s:.3f} | {k:.2f}")
        return "\n".join(rows)


def sample_rows(loader: DataLoader, n: int, gen: torch.Generator, what: str):
    """`n` random examples of a loader as one `(inputs, labels)` batch, and their indices."""
    total = sum(len(batch[-1]) for batch in loader)
    if n < 1:
        raise ValueError(f"the number of sampled {what} examples must be >= 1; got {n}.")
    chosen = torch.randperm(total, generator=gen)[: min(n, total)].sort().values
    rows, offset = [], 0
    for inputs, labels in iter_batches(loader, torch.device("cpu"), what):
        size = len(labels)
        local = chosen[(chosen >= offset) & (chosen < offset + size)] - offset
        if len(local):
            rows.append((tuple(x[local] for x in inputs), labels[local]))
        offset += size
    inputs = tuple(torch.cat([r[0][i] for r in rows]) for i in range(len(rows[0][0])))
    return (*inputs, torch.cat([r[1] for r in rows])), chosen


def check_fidelity(
    run: CheckedRun,
    inputs,
    n_test: int,
    n_train: int,
    reference: str,
    seed: int,
    warn_below: float,
    n_curvature: int | None,
) -> FidelityReport:
    """Implements `LayerInfluence.check` (see there) on the computation `run` describes."""
    start = time.perf_counter()
    if n_curvature is not None and (not isinstance(n_curvature, int) or n_curvature < 1):
        raise ValueError(f"n_curvature must be a positive int or None; got {n_curvature!r}.")
    gen = torch.Generator().manual_seed(seed)
    test, test_idx = sample_rows(
        as_dataloader(inputs, run.batch_size, "inputs"), n_test, gen, "inputs"
    )
    train, train_idx = sample_rows(run.train_loader, n_train, gen, "train_dataset")
    test_loader = as_dataloader(test, run.batch_size, "inputs")
    if n_curvature is None or n_curvature >= run.n_train or not run.subset_ok:
        # The whole training set: the strategy as fitted for the calls it checks.
        strategy, ctx = run.fitted()
        curvature_idx = torch.arange(run.n_train)
    else:
        subset, curvature_idx = sample_rows(run.train_loader, n_curvature, gen, "train_dataset")
        sub_loader = as_dataloader(subset, run.batch_size, "train_dataset")
        strategy, ctx = run.fit_on(sub_loader, len(curvature_idx))
    x, y = tuple(t.to(ctx.device) for t in train[:-1]), train[-1].to(ctx.device)

    def scores_of(s: CurvatureStrategy) -> Tensor:
        chunks = s.scores(ctx, test_loader, lambda desc: [(-1, x, y)], run.query_rank)
        return torch.cat(list(chunks), dim=-1).double().cpu()

    ours = scores_of(strategy)
    ref: CurvatureStrategy
    if reference == "auto":
        # One group of blocks at a time: a deep network's references are never held at once.
        groups = plan_groups(ReferenceStrategy(run.damping, strategy).plan(ctx, strategy.blocks))
        theirs = torch.empty_like(ours)
        for group in groups:
            ref = ReferenceStrategy(run.damping, reuse=strategy, index=group)
            ref.fit(ctx, [strategy.blocks[i] for i in group])
            theirs[group] = scores_of(ref)
            del ref
        ref_name = ReferenceStrategy.name
    else:
        ref = make_strategy(reference, run.damping)
        ref.fit(ctx, strategy.blocks)
        theirs, ref_name = scores_of(ref), ref.name
    report = FidelityReport(
        layers=list(run.layer_names),
        strategy=strategy.name,
        reference=ref_name,
        pearson=torch.tensor(
            [pearson(a, b) for a, b in zip(ours, theirs, strict=True)], dtype=torch.float64
        ),
        spearman=torch.tensor(
            [spearman(a, b) for a, b in zip(ours, theirs, strict=True)], dtype=torch.float64
        ),
        scale=torch.tensor(
            [float((a * b).sum() / (b * b).sum()) for a, b in zip(ours, theirs, strict=True)],
            dtype=torch.float64,
        ),
        test_indices=test_idx,
        train_indices=train_idx,
        curvature_indices=curvature_idx,
        seconds=time.perf_counter() - start,
    )
    low = [
        f"{n or '<model>'} ({p:.2f})"
        for n, p in zip(report.layers, report.pearson.tolist(), strict=True)
        if p < warn_below
    ]
    if low:
        warnings.warn(
            f"hessian={strategy.name!r} agrees poorly with {ref_name!r} on {len(low)} layer(s): "
            f"{', '.join(low)} Pearson < {warn_below}. Its scores there are unreliable: raise "
            "damping, or use hessian='cg' or 'exact' for those layers.",
            stacklevel=3,
        )
    return report
