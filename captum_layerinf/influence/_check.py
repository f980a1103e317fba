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

PAIRED_QUERY_BYTES = 2**30
"""Largest float64 test queries of one block `[2 n_test, P]` scored for both sides at once;
a larger block's are scored one side at a time, at twice the training gradients' cost."""


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


def curvature_size(n_curvature: int | None, n_train: int) -> int:
    """The training examples whose curvature `check` fits both sides on (`n_train`: all).

    The subset is not made smaller on small training sets to save time: how well a
    strategy agrees with the exact block moves with the subset's size. EK-FAC on
    torchvision's resnet18 at 224x224 (100 training images) had a median per-layer
    Pearson correlation of 0.97 on 64 of them and 0.69 on 25 (docs/zoo.md).
    """
    if n_curvature is None:
        return n_train
    if isinstance(n_curvature, bool) or not isinstance(n_curvature, int) or n_curvature < 1:
        raise ValueError(f"n_curvature must be a positive int or None; got {n_curvature!r}.")
    return min(n_curvature, n_train)


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
    n_curvature = curvature_size(n_curvature, run.n_train)
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
    whole = n_curvature >= run.n_train or not run.subset_ok
    if whole:
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
    """Scores of the fitted `strategy` and of the reference, and the reference's kinds.

    Where `strategy` has an `inverse_hvp`, each group of reference blocks is scored
    together with it (`_Paired`): one pass of per-example training gradients for both.
    """
    x, y = train
    # The sampled rows are validated here once; the strategy's fit validated the training
    # set. No later pass runs a forward pass to validate again.
    for _ in ctx.checked(test_loader, "inputs", "check"):
        pass
    ctx.validate_batch(x, y, "train_dataset")
    ctx = dataclasses.replace(ctx, validated=True)

    def scores_of(s: CurvatureStrategy) -> Tensor:
        chunks = s.scores(ctx, test_loader, lambda desc: [(-1, x, y)], run.query_rank)
        return torch.cat(list(chunks), dim=-1).double().cpu()

    n_blocks = len(strategy.blocks)
    if reference != "auto":
        kinds = [make_strategy(reference, run.damping).name] * n_blocks
        groups = [list(range(n_blocks))]
    else:
        # One group of blocks at a time: a deep network's references are never held at once.
        plan = ReferenceStrategy(run.damping).plan(ctx, strategy.blocks)
        groups = plan_groups(plan)
        kinds = [kind for kind, _ in plan]
    paired = strategy.has_inverse_hvp()
    n_test = len(test_loader.dataset)  # type: ignore[arg-type]
    ours = None if paired else scores_of(strategy)  # TracIn, Captum's: scored alone
    parts_ours, parts_theirs = [], []
    for group in groups:
        blocks = [strategy.blocks[i] for i in group]
        if reference != "auto":
            part: CurvatureStrategy = make_strategy(reference, run.damping)
        else:
            part = ReferenceStrategy(run.damping, [kinds[i] for i in group])
        part.fit(ctx, blocks)
        if paired and 2 * n_test * max(b.numel for b in blocks) * 8 <= PAIRED_QUERY_BYTES:
            pair = _Paired(strategy, group, part)
            first, second = pair.split(scores_of(pair))
            parts_ours.append(first)
        else:  # one side's queries at a time (vgg11_bn's classifier.0: 3.3 GB each)
            if paired:
                parts_ours.append(scores_of(_Some(strategy, group)))
            second = scores_of(part)
        parts_theirs.append(second)
        del part
    order = torch.tensor([i for g in groups for i in g]).argsort()
    theirs = torch.cat(parts_theirs)[order]
    if ours is None:
        ours = torch.cat(parts_ours)[order]
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


class _Paired(CurvatureStrategy):
    """Two fitted strategies' solves of the same blocks, stacked along the test examples.

    `first` is solved on its blocks `index`, `second` on all of its own (the same blocks);
    one scoring pass then forms each training example's gradients once for both sides.
    `split` takes the scores apart again.
    """

    name = "paired"

    def __init__(
        self, first: CurvatureStrategy, index: list[int], second: CurvatureStrategy
    ) -> None:
        super().__init__(second.settings, second.damping)
        self.first, self.index, self.second = first, index, second
        self.blocks = second.blocks
        self.sizes: list[list[int]] = [[] for _ in index]

    def fit(self, ctx: FitContext, blocks) -> None:
        raise NotImplementedError("a pair of fitted strategies is not fitted")

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """`[first's solves; second's solves]` of `vectors [n, P]`: `[2 n, P]`, float64."""
        n = len(vectors)
        self.sizes[block].append(n)
        out = torch.empty(2 * n, vectors.shape[1], dtype=torch.float64, device=vectors.device)
        out[:n] = self.first.inverse_hvp(self.index[block], vectors)
        out[n:] = self.second.inverse_hvp(block, vectors)
        return out

    def split(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """`(first's, second's)` scores `[n_blocks, n, B]` from the pair's `[n_blocks, 2 n, B]`.

        Queries are added a chunk of test rows at a time, each chunk's rows as
        `[first; second]`; the chunks may differ per block.
        """
        firsts, seconds = [], []
        for b, sizes in enumerate(self.sizes):
            first, second, start = [], [], 0
            for n in sizes:
                first.append(torch.arange(start, start + n))
                second.append(torch.arange(start + n, start + 2 * n))
                start += 2 * n
            firsts.append(scores[b, torch.cat(first)])
            seconds.append(scores[b, torch.cat(second)])
        return torch.stack(firsts), torch.stack(seconds)
