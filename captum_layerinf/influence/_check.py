"""Fidelity check: how well a strategy agrees with a reference, layer by layer, cheaply.

By default both the checked strategy and the reference are fitted on the curvature of the
same small random subset of the training set (`n_curvature` examples), so the check measures
the strategy's approximation (e.g. EK-FAC's Kronecker structure against the block it
approximates) at a fraction of the cost of the call it checks. The default reference,
"auto", needs neither forward-mode AD nor TorchScript for Linear/Conv2d layers: per block

- where the checked strategy is itself exact on a small block, or builds its dense
  Gauss-Newton block (`CurvatureStrategy.exact_blocks`), its scores on the same data are
  the reference's: the block is reported as its own reference ("itself", correlations 1)
  and neither side is fitted or scored there;
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

import dataclasses
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
        strategy_name: The checked strategy's name.
        fitted: `fitted()`: the strategy fitted on the whole training set, and its context.
        fit_on: `fit_on(loader, n, layers)`: a fresh strategy fitted on `n` training
            examples, for the layers at these indices only.
        own_reference: Per layer, whether the strategy is its own reference there
            (`_reference.own_reference`): solved exactly, it is not refitted or scored.
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
    strategy_name: str
    fitted: Callable[[], Fitted]
    fit_on: Callable[[DataLoader, int, list[int]], Fitted]
    own_reference: list[bool]
    subset_ok: bool = True


@dataclass(frozen=True)
class FidelityReport:
    """Per-layer agreement of a strategy's scores with a reference strategy's.

    Attributes:
        layers: Layer names.
        strategy: The strategy checked.
        reference: The reference strategy ("auto": exact, Woodbury Gauss-Newton or CG per
            block; see the module docstring).
        references: Per layer, the reference used: "itself" where the strategy solves the
            layer exactly (its scores are the reference's; correlations and scale 1 by
            construction, nothing computed), else the reference's kind there
            ("gauss-newton", "exact", "cg", or the named reference strategy).
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
    references: list[str]
    seconds: float = float("nan")

    def __str__(self) -> str:
        rows = [
            f"{self.strategy} vs {self.reference} (curvature of {len(self.curvature_indices)} "
            f"training examples, {self.seconds:.1f} s):",
            "layer | Pearson | Spearman | scale | reference",
        ]
        cols = zip(
            self.layers, self.pearson, self.spearman, self.scale, self.references, strict=True
        )
        for name, p, s, k, ref in cols:
            rows.append(f"{name or '<model>'} | {p:.3f} | {s:.3f} | {k:.2f} | {ref}")
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
    own = run.own_reference if reference == "auto" else [False] * len(run.layer_names)
    todo = [i for i, o in enumerate(own) if not o]
    n_layers = len(run.layer_names)
    ours = torch.zeros(n_layers, len(test_idx), len(train_idx), dtype=torch.float64)
    theirs = ours.clone()
    kinds = ["itself"] * n_layers
    whole = n_curvature is None or n_curvature >= run.n_train or not run.subset_ok
    if whole or n_curvature is None:
        curvature_idx = torch.arange(run.n_train)
    else:
        subset, curvature_idx = sample_rows(run.train_loader, n_curvature, gen, "train_dataset")
    if todo:
        if whole:
            # The whole training set: the strategy as fitted for the calls it checks.
            strategy, ctx = run.fitted()
            if len(todo) < n_layers:
                strategy = _Some(strategy, todo)
        else:
            sub_loader = as_dataloader(subset, run.batch_size, "train_dataset")
            strategy, ctx = run.fit_on(sub_loader, len(curvature_idx), todo)
        x, y = tuple(t.to(ctx.device) for t in train[:-1]), train[-1].to(ctx.device)
        pair = _compare(strategy, ctx, test_loader, (x, y), run, reference)
        ours[todo], theirs[todo] = pair[0], pair[1]
        for i, kind in zip(todo, pair[2], strict=True):
            kinds[i] = kind
    name = run.strategy_name
    ref_name = ReferenceStrategy.name if reference == "auto" else kinds[0]
    itself = torch.tensor(own, dtype=torch.bool)
    report = FidelityReport(
        layers=list(run.layer_names),
        strategy=name,
        reference=ref_name,
        pearson=_per_layer(pearson, ours, theirs, itself),
        spearman=_per_layer(spearman, ours, theirs, itself),
        scale=_per_layer(_slope, ours, theirs, itself),
        test_indices=test_idx,
        train_indices=train_idx,
        curvature_indices=curvature_idx,
        references=kinds,
        seconds=time.perf_counter() - start,
    )
    low = [
        f"{n or '<model>'} ({p:.2f})"
        for n, p in zip(report.layers, report.pearson.tolist(), strict=True)
        if p < warn_below
    ]
    if low:
        warnings.warn(
            f"hessian={name!r} agrees poorly with {ref_name!r} on {len(low)} layer(s): "
            f"{', '.join(low)} Pearson < {warn_below}. Its scores there are unreliable: raise "
            "damping, or use hessian='cg' or 'exact' for those layers.",
            stacklevel=3,
        )
    return report


def _compare(
    strategy: CurvatureStrategy,
    ctx: FitContext,
    test_loader: DataLoader,
    train: tuple[tuple[Tensor, ...], Tensor],
    run: CheckedRun,
    reference: str,
) -> tuple[Tensor, Tensor, list[str]]:
    """Scores of the fitted `strategy` and of the reference, and the reference's kinds."""
    x, y = train

    def scores_of(s: CurvatureStrategy) -> Tensor:
        chunks = s.scores(ctx, test_loader, lambda desc: [(-1, x, y)], run.query_rank)
        return torch.cat(list(chunks), dim=-1).double().cpu()

    ours = scores_of(strategy)
    # The fit and that scoring validated every batch this check sees: no more forward passes.
    ctx = dataclasses.replace(ctx, validated=True)
    if reference != "auto":
        ref = make_strategy(reference, run.damping)
        ref.fit(ctx, strategy.blocks)
        return ours, scores_of(ref), [ref.name] * len(strategy.blocks)
    # One group of blocks at a time: a deep network's references are never held at once.
    theirs = torch.empty_like(ours)
    kinds = [""] * len(strategy.blocks)
    plan = ReferenceStrategy(run.damping).plan(ctx, strategy.blocks)
    for group in plan_groups(plan):
        part = ReferenceStrategy(run.damping, [plan[i][0] for i in group])
        part.fit(ctx, [strategy.blocks[i] for i in group])
        theirs[group] = scores_of(part)
        for i, kind in zip(group, part.kinds, strict=True):
            kinds[i] = kind
        del part
    return ours, theirs, kinds


def _slope(a: Tensor, b: Tensor) -> float:
    """Least-squares slope of `a` on `b`."""
    return float((a * b).sum() / (b * b).sum())


def _per_layer(stat, ours: Tensor, theirs: Tensor, itself: Tensor) -> Tensor:
    """`stat(ours[l], theirs[l])` per layer; 1 where the strategy is its own reference."""
    out = [1.0 if own else stat(a, b) for a, b, own in zip(ours, theirs, itself, strict=True)]
    return torch.tensor(out, dtype=torch.float64)


class _Some(CurvatureStrategy):
    """Some blocks of a fitted strategy, solved by its `inverse_hvp`."""

    name = "some blocks"

    def __init__(self, strategy: CurvatureStrategy, index: list[int]) -> None:
        super().__init__(strategy.settings, strategy.damping)
        self.strategy = strategy
        self.index = index
        self.blocks = [strategy.blocks[i] for i in index]

    def fit(self, ctx: FitContext, blocks) -> None:
        raise NotImplementedError("a view of a fitted strategy is not fitted")

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """The viewed strategy's `(H_b + λ I)^{-1} v` of its block `index[block]`."""
        return self.strategy.inverse_hvp(self.index[block], vectors)
