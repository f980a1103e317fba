"""`LayerInfluence`: layer-wise influence functions (Aamir et al. 2023) for Captum."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import torch
from captum.influence import DataInfluence
from captum.influence._utils.common import KMostInfluentialResults
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._utils.data import as_dataloader, example_count, iter_batches
from .._utils.losses import ExampleLoss, PerExampleLoss
from .._utils.modules import (
    check_finite_weights,
    check_independent_examples,
    evaluation_state,
    forward_order,
    model_device,
    output_transform,
    parameterised_modules,
    resolve_layers,
    uncalled_layers,
    warn_low_precision,
)
from ._blocks import Block, Scope, scope_blocks
from ._check import CheckedRun, FidelityReport, check_fidelity
from ._collect import ScoreCollector
from ._distributed import Shard, current_shard
from ._gradients import GradientEngine
from ._reference import own_reference
from ._resume import RunSpec, open_store, run_fingerprint, score_chunks
from ._scoring import BlockGradients
from ._taps import mark_uncalled
from .strategies import (
    AutoStrategy,
    CurvatureStrategy,
    FitContext,
    StrategySettings,
    make_strategy,
    shardable_strategies,
)

# Test inputs: a batch `(*inputs, labels)`, or a DataLoader yielding such batches.
_Inputs = tuple[Tensor, ...] | DataLoader

logger = logging.getLogger("captum_layerinf")


class LayerInfluence(DataInfluence):
    r"""Layer-wise influence of training examples on test predictions.

    For a layer `l` with parameters θ_l, training example z_j and test example ẑ_k::

        s_l(j, k) = ∇_{θ_l} L(ẑ_k)ᵀ (H_l + λ I)⁻¹ ∇_{θ_l} L(z_j)

    with H_l the Hessian block of the MEAN training loss and λ = `damping`. Positive
    scores are proponents: removing z_j is predicted to raise the test loss by s_l / n.
    The compound score is Σ_l s_l (paper Eq. 7); the global score uses all parameters
    and the full Hessian (Eq. 5).

    Args:
        model: A model returning outputs `[batch, ...]` (logits `[batch, classes]` for
            cross-entropy; see `output_fn` for other outputs). Evaluated in eval mode
            (a model in training mode is switched, with a warning, and restored).
        train_dataset: A Dataset or a non-shuffling DataLoader whose batches are
            `(*inputs, labels)`, or such a tuple of tensors.
        layers: Dotted module names from `model.named_modules()`; default: every module
            owning trainable parameters that the forward pass calls, in forward order (one
            whose weights it uses without calling it, as nn.MultiheadAttention's
            `out_proj`, is left out with a warning). Naming a frozen layer computes it.
        loss_fn: Per-example loss; default cross-entropy. A loss module with any
            `reduction` is used per example (a copy with `reduction="none"`), its
            non-batch dimensions averaged for "mean" and summed otherwise; a function
            `(outputs, targets) -> Tensor [batch]` or `[batch, ...]` (summed). Regression,
            multi-label and label-smoothing losses all work.
        hessian: A strategy name or a strategy's Settings instance, e.g.
            `EKFACSettings(fisher="sampled")`: "auto" (the default: per layer, "exact"
            where the dense float64 block fits `AutoSettings.max_block_bytes` (128 MiB,
            4,096 parameters), else "ekfac" for Linear/Conv2d layers and CG (preconditioned
            where "pcg" is available) for others; the global score is exact when the full
            Hessian fits, else block-diagonal over modules; `strategies` says what each
            layer got and why), "exact" (dense blocks), "cg" (conjugate
            gradient, exact Hessian-vector products), "lissa" (stochastic Neumann series),
            "ekfac" (eigenvalue-corrected Kronecker factors, for large layers), "identity"
            (gradient similarity), "tracin" (checkpoints), "captum" (Captum's
            NaiveInfluenceFunction per layer). `LayerInfluence.check` measures an
            approximate strategy against CG.
        damping: λ added to every Hessian block. For a model trained with L2 weight decay
            `wd` on the mean loss, `damping=wd` is the exact choice.
        batch_size: Batch size used to iterate over Datasets.
        output_dir: If set, scores are kept there in chunks (one per training batch) with a
            manifest, the run's arguments and a fingerprint of model, data and settings; a
            rerun computes only missing chunks, and reads everything when all are there.
            Another run's directory is refused. See `ScoreStore`.
        checkpoints: For `hessian="tracin"`: checkpoint paths or state dicts, c = 1..C, or a
            directory of checkpoint files (natural sort order).
        checkpoints_load_func: For "tracin": `f(model, checkpoint)` loading one checkpoint
            into the model; default `torch.load(path, weights_only=True)` + `load_state_dict`.
        learning_rates: For "tracin": η_c per checkpoint (default 1.0 each).
        query_rank: If set, each test example's preconditioned gradient of a Linear or
            Conv2d layer is kept as a rank-`query_rank` truncated SVD of its
            `[d_out, d_in]` matrix: `query_rank (d_out + d_in)` numbers instead of
            `d_out d_in` (for VGG16's fc6, 30 k instead of 103 M at rank 1). An
            approximation for the test side only; None keeps it exact.
        output_fn: For a model whose output is not a tensor (a tuple, a dict, a
            HuggingFace-style object): `output_fn(output) -> Tensor [batch, ...]` picks the
            outputs the loss is computed on, e.g. `lambda out: out["logits"]`.
        show_progress: Show tqdm progress bars over the fit passes and the scoring of the
            training set (as Captum's `show_progress`); each method's own flag adds to it.

    Examples:
        >>> li = LayerInfluence(model, train_ds)
        >>> scores = li.influence((x_test, y_test))       # [n_layers, n_test, n_train]
        >>> top = li.influence((x_test, y_test), k=5)      # indices [n_layers, n_test, 5]
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset | DataLoader | tuple[Tensor, ...],
        layers: Sequence[str] | None = None,
        loss_fn: nn.Module | PerExampleLoss | None = None,
        hessian: str | StrategySettings = "auto",
        damping: float = 1e-2,
        batch_size: int = 64,
        output_dir: str | os.PathLike | None = None,
        checkpoints: Sequence[Any] | str | os.PathLike | None = None,
        checkpoints_load_func: Callable[[nn.Module, Any], Any] | None = None,
        learning_rates: Sequence[float] | None = None,
        query_rank: int | None = None,
        output_fn: Callable[[Any], Tensor] | None = None,
        show_progress: bool = False,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}.")
        if not isinstance(damping, (int, float)) or not 0 <= damping < float("inf"):
            raise ValueError(
                f"damping must be a number >= 0; got {damping!r}. It must be finite (infinite "
                "damping makes every score 0); a typical value is 1e-3 to 1e-1, or the weight "
                "decay the model was trained with."
            )
        if output_fn is not None and not callable(output_fn):
            raise TypeError(f"output_fn must be callable; got {type(output_fn).__name__}.")
        self.output_fn = output_fn
        self.model = model
        self.train_dataset = train_dataset
        self.damping = float(damping)
        self.batch_size = batch_size
        self.hessian = hessian
        self.show_progress = bool(show_progress)
        self._announced: set[Scope] = set()
        if query_rank is not None and (not isinstance(query_rank, int) or query_rank < 1):
            raise ValueError(f"query_rank must be a positive int or None; got {query_rank!r}.")
        self.query_rank = query_rank
        if output_dir is not None and Path(output_dir).exists() and not Path(output_dir).is_dir():
            raise NotADirectoryError(
                f"output_dir {os.fspath(output_dir)!r} is a file; pass a directory (it is "
                "created if missing)."
            )
        self.output_dir = None if output_dir is None else Path(output_dir)
        self._store_key: tuple[dict[str, str], list[int]] | None = None
        given = {
            "checkpoints": checkpoints,
            "checkpoints_load_func": checkpoints_load_func,
            "learning_rates": learning_rates,
        }
        self._strategy_args = {k: v for k, v in given.items() if v is not None}
        # Fail early on an unknown strategy or arguments it does not take.
        make_strategy(hessian, self.damping, **self._strategy_args)
        self.train_dataloader = as_dataloader(train_dataset, batch_size, "train_dataset")
        self._built_loader = not isinstance(train_dataset, DataLoader)
        self.loss = ExampleLoss(loss_fn)
        self.device = model_device(model)
        check_finite_weights(model)
        check_independent_examples(model)
        warn_low_precision(model)
        with evaluation_state(model):
            inputs, _ = next(iter_batches(self.train_dataloader, self.device, "train_dataset"))
            called = forward_order(model, list(parameterised_modules(model)), inputs)
            uncalled = uncalled_layers(model, inputs, called)
            self.layer_names = resolve_layers(model, layers, inputs, called)
        # Their gradients come from autograd, not from their (unseen) inputs and outputs.
        mark_uncalled(model.get_submodule(name) for name in uncalled)
        if layers is None and uncalled:
            warnings.warn(
                f"layers {uncalled} are used by the forward pass without being called as "
                "modules (their weights go to a function such as F.linear, as in "
                "nn.MultiheadAttention and torchvision's Swin), so the default selection "
                "leaves them out: no hook sees their inputs, and their blocks need autograd "
                "gradients and, when large, an iterative solver (slow). Name them in "
                "`layers=` to compute them; global_influence includes them.",
                stacklevel=2,
            )
        self._example_shapes = [tuple(x.shape[1:]) for x in inputs]
        self._fitted: dict[Scope, tuple[CurvatureStrategy, FitContext]] = {}

    # ---------------------------------------------------------------- public API

    @overload
    def influence(
        self, inputs: _Inputs, k: None = None, proponents: bool = ..., show_progress: bool = ...
    ) -> Tensor: ...
    @overload
    def influence(
        self, inputs: _Inputs, k: int, proponents: bool = ..., show_progress: bool = ...
    ) -> KMostInfluentialResults: ...
    def influence(
        self,
        inputs: _Inputs,
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Tensor | KMostInfluentialResults:
        """Layer-wise influence of every training example on every test example.

        Args:
            inputs: Test batch `(*inputs, labels)`, or a DataLoader yielding such batches.
            k: If given, return only the `k` most influential training examples.
            proponents: With `k`: largest scores (proponents) or smallest (opponents).
            show_progress: Show progress bars.

        Returns:
            `Tensor [n_layers, n_test, n_train]`, or with `k` a `KMostInfluentialResults`
            whose `indices` and `influence_scores` are `[n_layers, n_test, k]`, sorted
            best first.
        """
        return self._run(inputs, Scope.LAYERS, k, proponents, False, show_progress)

    @overload
    def compound_influence(
        self, inputs: _Inputs, k: None = None, proponents: bool = ..., show_progress: bool = ...
    ) -> Tensor: ...
    @overload
    def compound_influence(
        self, inputs: _Inputs, k: int, proponents: bool = ..., show_progress: bool = ...
    ) -> KMostInfluentialResults: ...
    def compound_influence(
        self,
        inputs: _Inputs,
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Tensor | KMostInfluentialResults:
        """Compound influence Σ_l s_l over the selected layers (paper Eq. 7).

        Returns:
            `Tensor [n_test, n_train]`, or with `k` a `KMostInfluentialResults` with fields
            `[n_test, k]`. Never holds the per-layer scores of all training examples.
        """
        return self._run(inputs, Scope.LAYERS, k, proponents, True, show_progress)

    @overload
    def global_influence(
        self, inputs: _Inputs, k: None = None, proponents: bool = ..., show_progress: bool = ...
    ) -> Tensor: ...
    @overload
    def global_influence(
        self, inputs: _Inputs, k: int, proponents: bool = ..., show_progress: bool = ...
    ) -> KMostInfluentialResults: ...
    def global_influence(
        self,
        inputs: _Inputs,
        k: int | None = None,
        proponents: bool = True,
        show_progress: bool = False,
    ) -> Tensor | KMostInfluentialResults:
        """Influence through all trainable parameters and the full Hessian (paper Eq. 5).

        Returns:
            `Tensor [n_test, n_train]`, or with `k` a `KMostInfluentialResults` with fields
            `[n_test, k]`.
        """
        return self._run(inputs, Scope.GLOBAL, k, proponents, True, show_progress)

    def self_influence(
        self,
        inputs: tuple[Tensor, ...] | DataLoader | None = None,
        show_progress: bool = False,
    ) -> Tensor:
        """Layer-wise self-influence s_l(j, j) of each example on its own loss.

        Args:
            inputs: Examples `(*inputs, labels)` or a DataLoader; default the training set.
            show_progress: Show progress bars.

        Returns:
            `Tensor [n_layers, n]`.
        """
        loader = (
            self.train_dataloader
            if inputs is None
            else as_dataloader(inputs, self.batch_size, "inputs")
        )
        with evaluation_state(self.model), output_transform(self.model, self.output_fn):
            strategy, ctx = self._fit(Scope.LAYERS, show_progress)
            return strategy.self_scores(ctx, loader).to(self._dtype)

    def check(
        self,
        inputs: tuple[Tensor, ...] | DataLoader,
        n_test: int = 4,
        n_train: int = 32,
        reference: str = "auto",
        seed: int = 0,
        warn_below: float = 0.9,
        show_progress: bool = False,
        n_curvature: int | None = 64,
    ) -> FidelityReport:
        """Measures, per layer, how well this strategy agrees with a reference, cheaply.

        Both this instance's strategy and the reference are fitted on the curvature of the
        same random subset of `n_curvature` training examples, and score a random subset of
        test and training examples; the report compares them per layer. This measures
        the strategy's own approximation (e.g. EK-FAC's Kronecker structure) at a small
        fraction of the cost of the call it checks. The default reference, "auto", is the
        exact dense block where it is small, the exact damped Gauss-Newton block (inverted
        by the Woodbury identity, reverse-mode passes only) for larger Linear/Conv2d
        layers (the Hessian block where the logits are piecewise linear in the layer), and
        CG otherwise. A layer this strategy solves exactly (`exact`, or `auto`'s exact and
        Gauss-Newton layers, when small) is its own reference there: it is neither refitted
        nor scored, and reported as "itself" with correlations 1 (`reference="exact"` or
        another name computes every layer). Approximate curvature (EK-FAC, LiSSA,
        identity) can be far off on a trained network's nearly singular layers at small
        damping; run this before trusting it.

        Args:
            inputs: Test examples `(*inputs, labels)` or a DataLoader.
            n_test: Test examples sampled.
            n_train: Training examples sampled.
            reference: "auto" (see above), or a strategy name to compare with.
            seed: Seed of the sampling.
            warn_below: Warn when a layer's Pearson correlation is below this.
            show_progress: Show progress bars.
            n_curvature: Training examples whose curvature both sides use; None (or at
                least the training set's size) compares on the whole training set, with
                this instance's fitted strategy. A smaller subset is cheaper (both sides
                are fitted on it), but its verdict can differ from the whole set's (see
                docs/zoo.md). `hessian="captum"` is always checked on the whole training
                set: Captum's inverse of a block with fewer examples than parameters is
                right only for the examples it was built from.

        Returns:
            A `FidelityReport` with `pearson`, `spearman` and `scale` per layer
            (`print(report)` shows a table).

        Examples:
            >>> report = LayerInfluence(model, train, hessian="ekfac").check((x, y))
            >>> report.pearson            # Tensor [n_layers]
        """
        strategy = self._new_strategy()
        run = CheckedRun(
            train_loader=self.train_dataloader,
            n_train=self._n_train(),
            batch_size=self.batch_size,
            layer_names=list(self.layer_names),
            damping=self.damping,
            query_rank=self.query_rank,
            strategy_name=strategy.name,
            fitted=lambda: self._fit(Scope.LAYERS, show_progress),
            fit_on=lambda loader, n, layers: self._fit_on(loader, n, layers, show_progress),
            own_reference=own_reference(strategy, self.model, self._blocks(Scope.LAYERS)),
            subset_ok=strategy.scores_outside_curvature,
        )
        with evaluation_state(self.model), output_transform(self.model, self.output_fn):
            return check_fidelity(
                run, inputs, n_test, n_train, reference, seed, warn_below, n_curvature
            )

    @property
    def strategies(self) -> dict[str, tuple[str, str]]:
        """Per layer, `(strategy name, reason)`; the key `"<global>"` holds Eq. 5's.

        With `hessian="auto"` the reason says why (block size against the budget, Kronecker
        structure); the global entry says whether the full Hessian is exact or
        approximated block-diagonally. Nothing is fitted to answer: before a fit this is
        the plan by size; once fitted, the fit's choices (the autograd graph of the first
        training example shows the curved blocks; those beyond
        `AutoSettings.max_hvp_params` get "gauss-newton").

        Examples:
            >>> LayerInfluence(model, train).strategies["features.0"]
            ('exact', 'dense block 168 params (0.2 MiB) fits 128 MiB')
        """
        strategy = self._new_strategy()
        out = {}
        for scope in Scope:
            blocks = self._blocks(scope)
            fitted = self._fitted.get(scope, (None,))[0]
            if isinstance(fitted, AutoStrategy):
                plan = [fitted.choices[b.name] for b in blocks]
            elif isinstance(strategy, AutoStrategy):
                plan = strategy.plan(self.model, blocks)
            else:
                plan = [(strategy.name, f"hessian={strategy.name!r} was given")] * len(blocks)
            out.update({b.name: c for b, c in zip(blocks, plan, strict=True)})
        return out

    # ---------------------------------------------------------------- internals

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _new_strategy(self) -> CurvatureStrategy:
        return make_strategy(self.hessian, self.damping, **self._strategy_args)

    def _blocks(self, scope: Scope | str) -> list[Block]:
        return scope_blocks(self.model, Scope(scope), self.layer_names)

    def _n_train(self) -> int:
        return example_count(self.train_dataloader, self._built_loader)

    def _context(
        self, loader: DataLoader, n_train: int, show_progress: bool, shard: Shard | None = None
    ) -> FitContext:
        """The context a strategy is fitted with, on the training batches of `loader`."""
        return FitContext(
            model=self.model,
            loss=self.loss,
            engine=GradientEngine(self.model, self.loss),
            train_loader=loader,
            n_train=n_train,
            damping=self.damping,
            device=self.device,
            show_progress=show_progress or self.show_progress,
            shard=shard,
            example_shapes=self._example_shapes,
        )

    def _fit(
        self, which: Scope | str, show_progress: bool, state: dict | None = None
    ) -> tuple[CurvatureStrategy, FitContext]:
        """The strategy of `which` (a `Scope`) and its context, fitted once.

        With `state` (a strategy's `export()`), the fit is restored instead of computed.
        """
        scope = Scope(which)
        if scope not in self._fitted:
            check_finite_weights(self.model)
            strategy = self._new_strategy()
            shard = current_shard(self.device)
            if shard is not None and not strategy.shardable:
                raise ValueError(
                    f"hessian={strategy.name!r} cannot be split across processes (it is not "
                    "written as sums over the training set); run it in one process, without "
                    f"torchrun, or use one of {shardable_strategies()}."
                )
            ctx = self._context(self.train_dataloader, self._n_train(), show_progress, shard)
            if isinstance(strategy, AutoStrategy):
                other = self._fitted.get(Scope.LAYERS if scope is Scope.GLOBAL else Scope.GLOBAL)
                if other is not None and isinstance(other[0], AutoStrategy):
                    strategy.reuse = other[0]  # Same data and damping: shared blocks reused.
            strategy.keep_factors = True
            if state is None:
                strategy.fit(ctx, self._blocks(scope))
            else:
                strategy.restore(ctx, self._blocks(scope), state)
            if isinstance(strategy, AutoStrategy):
                self._announce(scope, [strategy.choices[b.name] for b in self._blocks(scope)])
            self._fitted[scope] = (strategy, ctx)
        strategy, ctx = self._fitted[scope]
        ctx.show_progress = show_progress or self.show_progress
        return strategy, ctx

    def _fit_on(
        self, loader: DataLoader, n_train: int, layers: list[int], show_progress: bool
    ) -> tuple[CurvatureStrategy, FitContext]:
        """A fresh strategy of some layers (indices) fitted on the examples of `loader` only."""
        ctx = self._context(loader, n_train, show_progress)
        strategy = self._new_strategy()
        blocks = self._blocks(Scope.LAYERS)
        strategy.fit(ctx, [blocks[i] for i in layers])
        return strategy, ctx

    def _announce(self, scope: Scope, plan: list[tuple[str, str]]) -> None:
        """Logs which strategies "auto" chose, once per scope; warns if any is approximate."""
        if scope in self._announced:
            return
        self._announced.add(scope)
        names = [name for name, _ in plan]
        counts = ", ".join(f"{n} x{names.count(n)}" for n in dict.fromkeys(names))
        what = "global influence" if scope is Scope.GLOBAL else f"{len(plan)} layers"
        line = f"hessian='auto' for {what}: {counts} (see LayerInfluence.strategies)."
        if scope is Scope.GLOBAL and names[0] != "exact":
            line += f" {plan[0][1]}."
        logger.info(line)
        if any(n != "exact" for n in names):
            warnings.warn(line, stacklevel=4)

    def _source(self, strategy: CurvatureStrategy, ctx: FitContext) -> BlockGradients:
        return strategy.block_gradients(ctx)

    def _run_spec(self) -> RunSpec:
        return RunSpec(
            model=self.model,
            train_loader=self.train_dataloader,
            layer_names=list(self.layer_names),
            strategy=self._new_strategy(),
            damping=self.damping,
            loss=self.loss,
            output_fn=self.output_fn,
            query_rank=self.query_rank,
            batch_size=self.batch_size,
        )

    def _run_key(self) -> tuple[dict[str, str], list[int]]:
        """The run's fingerprint and training batch sizes, computed once (reads the data)."""
        if self._store_key is None:
            self._store_key = run_fingerprint(self._run_spec())
        return self._store_key

    def _chunks(
        self, scope: Scope, test_loader: DataLoader, show_progress: bool
    ) -> Iterator[Tensor]:
        """Score chunks `[n_blocks, n_test, B]` in training order."""
        shard = current_shard(self.device)
        if self.output_dir is None and shard is None:
            strategy, ctx = self._fit(scope, show_progress)
            return strategy.scores(ctx, test_loader, ctx.indexed, self.query_rank)
        if self.output_dir is None:
            stored, sizes = None, [len(batch[-1]) for batch in self.train_dataloader]
        else:
            key = self._run_key()
            stored = open_store(self.output_dir, self._run_spec(), key, scope, test_loader, shard)
            sizes = key[1]
        return score_chunks(
            test_loader,
            lambda state: self._fit(scope, show_progress, state=state),
            fitted=scope in self._fitted,
            stored=stored,
            sizes=sizes,
            shard=shard,
            query_rank=self.query_rank,
            device=self.device,
        )

    def _run(
        self,
        inputs: tuple[Tensor, ...] | DataLoader,
        scope: Scope,
        k: int | None,
        proponents: bool,
        reduce_blocks: bool,
        show_progress: bool,
    ) -> Tensor | KMostInfluentialResults:
        if k is not None and (not isinstance(k, int) or k < 1):
            raise ValueError(f"k must be a positive int or None; got {k!r}.")
        test_loader = as_dataloader(inputs, self.batch_size, "inputs")
        collector = ScoreCollector(k, proponents)
        with evaluation_state(self.model), output_transform(self.model, self.output_fn):
            for chunk in self._chunks(scope, test_loader, show_progress):
                collector.add(chunk.sum(0) if reduce_blocks else chunk)
        result = collector.result()
        if isinstance(result, Tensor):
            return result.to(self._dtype)
        return KMostInfluentialResults(result.indices, result.influence_scores.to(self._dtype))
