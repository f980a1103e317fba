"""The curvature-strategy interface and the registry that maps names to strategies."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..._utils.data import batch_count, iter_batches
from ..._utils.losses import ExampleLoss
from .._blocks import Block
from .._gradients import GradientEngine
from .._scoring import BlockGradients, preconditioned_scores, preconditioned_self_scores

if TYPE_CHECKING:
    from .._distributed import Shard

Batch = tuple[tuple[Tensor, ...], Tensor]
"""A batch `(inputs, labels)` on the model's device."""
IndexedBatch = tuple[int, tuple[Tensor, ...], Tensor]
"""A batch `(index in the training loader, inputs, labels)`, not yet validated; the index
is -1 for a batch from elsewhere (e.g. `check`'s sample)."""
TrainPasses = Callable[[str], Iterable[IndexedBatch]]
"""`passes(desc)`: a fresh pass over the training batches to score (`desc` labels its
progress bar). A strategy may make several passes (one per checkpoint, for TracIn);
`CurvatureStrategy.scoring_batches` validates them."""


@dataclass
class FitContext:
    """What a strategy may use to fit curvature on the training set."""

    model: nn.Module
    loss: ExampleLoss
    engine: GradientEngine
    train_loader: DataLoader
    n_train: int
    damping: float
    device: torch.device
    show_progress: bool
    shard: Shard | None = None
    """Under torch.distributed: this rank's share. `batches`, `own_batches` and
    `check_count` then cover this rank's training batches only; sums over the training
    set must go through `all_reduce`."""
    example_shapes: list[tuple[int, ...]] | None = None
    """Per-example shapes of the training inputs, to explain a failing forward pass."""
    validated: bool = False
    """Every batch this context will see was validated before (`check`'s later passes):
    `validate_batch` runs no forward pass."""

    def batches(self, desc: str) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        """One pass over (this rank's share of) the training set, batches validated."""
        return self.checked(self.train_loader, "train_dataset", desc, own=True)

    def own_batches(self) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        """This rank's training batches on the device, not validated (already done by fit)."""
        for _, inputs, labels in self.own_indexed_batches():
            yield inputs, labels

    def own_indexed_batches(self) -> Iterator[IndexedBatch]:
        """`own_batches` with each batch's index in the training loader."""
        for i, batch in enumerate(iter_batches(self.train_loader, self.device, "train_dataset")):
            if self.shard is None or self.shard.owns(i):
                yield i, *batch

    def indexed(self, desc: str) -> Iterator[IndexedBatch]:
        """One pass over this rank's training batches, with a progress bar; not validated."""
        total = batch_count(self.train_loader)
        yield from tqdm(
            self.own_indexed_batches(),
            total=total,
            desc=desc,
            disable=not self.show_progress,
            leave=False,
        )

    def first_batch(self) -> tuple[tuple[Tensor, ...], Tensor]:
        """The first training batch (the same on every rank), validated."""
        return next(self.checked(self.train_loader, "train_dataset", "first batch"))

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """Sums (or maximises) a tensor over the ranks; unchanged in a single process."""
        return tensor if self.shard is None else self.shard.all_reduce(tensor, op)

    def check_count(self, seen: int) -> None:
        """Raises if a pass over the training set yielded another number of examples."""
        if self.shard is not None:
            total = torch.tensor([seen], dtype=torch.float64, device=self.device)
            seen = int(self.all_reduce(total).item())
        if seen != self.n_train:
            raise RuntimeError(
                f"the training set yielded {seen} examples, expected {self.n_train}."
            )

    def validate(self) -> None:
        """One pass over the training set that checks every batch and the example count."""
        self.check_count(
            sum(len(labels) for _, labels in self.batches("checking the training set"))
        )

    def checked(
        self, loader: DataLoader, what: str, desc: str, own: bool = False
    ) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        """Batches of `loader` on the model's device, labels and losses validated.

        With `own`, only this rank's batches (all of them in a single process).
        """
        total = batch_count(loader)
        bar = tqdm(total=total, desc=desc, disable=not self.show_progress, leave=False)
        with bar:
            for i, (inputs, labels) in enumerate(iter_batches(loader, self.device, what)):
                bar.update()
                if own and self.shard is not None and not self.shard.owns(i):
                    continue
                self.validate_batch(inputs, labels, what)
                yield inputs, labels

    def validate_batch(self, inputs: tuple[Tensor, ...], labels: Tensor, what: str) -> None:
        """Runs the model on a batch, checking labels and losses; explains shape errors."""
        if self.validated:
            return
        try:
            self.engine.outputs(inputs, labels, what)
        except RuntimeError as e:
            shapes = [tuple(x.shape[1:]) for x in inputs]
            if self.example_shapes is not None and shapes != self.example_shapes:
                raise ValueError(
                    f"`{what}`: the model failed on examples of shape {shapes} (without the "
                    f"batch dimension); the training examples have shape {self.example_shapes}. "
                    "Test and training inputs must be prepared the same way (size, channels)."
                ) from e
            raise


class CurvatureStrategy(ABC):
    """Approximates `(H_b + damping I)^{-1}` for each block `b`, H_b of the MEAN training loss.

    Subclasses set `name` and `Settings` (a frozen dataclass whose fields all have
    defaults), implement `fit` and `inverse_hvp`, and register themselves with
    `@register_strategy`. Scores are computed by `scores` and `self_scores`, whose
    defaults are built from `inverse_hvp`; a strategy that is not an inverse-Hessian
    product (it computes whole scores itself, like "tracin" and "captum") overrides
    those two instead of `inverse_hvp`.
    """

    name: ClassVar[str]
    Settings: ClassVar[type]
    shardable: ClassVar[bool] = False
    """Whether `fit` is correct under torch.distributed with a sharded `FitContext`
    (sums over the training set all-reduced); others raise an error there."""
    scores_outside_curvature: ClassVar[bool] = True
    """Whether scores of training examples outside the curvature's data are right; `check`
    fits a strategy that says False on the whole training set, not on a subset."""
    solves_exactly: ClassVar[bool] = False
    """Whether a fit solves every block exactly on its data: its damped Hessian block, or
    its Gauss-Newton block (see `exact_blocks`)."""
    keep_factors: bool = False
    """Set by `LayerInfluence` on the strategy it scores with (not on strategies used
    inside another): a strategy that can keep the training batches' pieces for scoring
    (`kept_factors`) does so only then."""

    def __init__(self, settings: Any, damping: float) -> None:
        self.settings = settings
        self.damping = damping
        self.blocks: list[Block] = []

    def exact_blocks(self, model: nn.Module, blocks: list[Block]) -> list[bool]:
        """Per block, whether a fit of it is exact on whatever data it is given.

        Known before fitting. `LayerInfluence.check` takes such a block's scores as their
        own reference (on the same data they are the reference's) and fits nothing there.
        """
        return [self.solves_exactly] * len(blocks)

    @abstractmethod
    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Builds whatever `inverse_hvp` (or `scores`) needs for every block."""

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """Returns `(H_b + damping I)^{-1} v` for each row v of `vectors [m, P]`, in float64."""
        raise NotImplementedError(f"strategy {self.name!r} does not provide inverse_hvp.")

    @classmethod
    def has_inverse_hvp(cls) -> bool:
        """Whether the strategy provides `inverse_hvp` (those that compute whole scores do not)."""
        return cls.inverse_hvp is not CurvatureStrategy.inverse_hvp

    def scores(
        self, ctx: FitContext, test: DataLoader, train: TrainPasses, query_rank: int | None = None
    ) -> Iterator[Tensor]:
        """Scores `Tensor [n_blocks, n_test, B]` (float64), one per training batch of `train`.

        The default preconditions the test gradients with `inverse_hvp` (at the call),
        then scores each training batch as the iterator is consumed, in one pass.

        Args:
            ctx: The context the strategy was fitted with.
            test: Test batches `(*inputs, labels)`.
            train: Passes over the training batches to score (see `TrainPasses`).
            query_rank: Keep each preconditioned test gradient of a Linear/Conv2d block
                as a rank-`query_rank` SVD (see `LayerInfluence`); None keeps it exact.
        """
        return preconditioned_scores(
            self.block_gradients(ctx),
            self.inverse_hvp,
            ctx.checked(test, "inputs", "test gradients"),
            self.scoring_batches(ctx, train("influence")),
            query_rank,
        )

    def scoring_batches(
        self, ctx: FitContext, batches: Iterable[IndexedBatch]
    ) -> Iterator[tuple[tuple[Tensor, ...], Tensor, dict[int, tuple[Tensor, Tensor]] | None]]:
        """`(inputs, labels, kept pieces or None)` of each batch of a training pass.

        A batch whose pieces the fit kept (`kept_factors`) was validated by the fit; any
        other is validated here.
        """
        for i, inputs, labels in batches:
            kept = self.kept_factors(i) if i >= 0 else None
            if kept is None:
                ctx.validate_batch(inputs, labels, "train_dataset")
            yield inputs, labels, kept

    def kept_factors(self, batch: int) -> dict[int, tuple[Tensor, Tensor]] | None:
        """The pieces `{block: (a, g)}` of training batch `batch`, kept by `fit`, or None.

        `batch` is the batch's index in the training loader. For the Linear/Conv blocks
        of `BlockGradients.factors`: `a` the layer's inputs and `g` its output gradients of
        the true-label loss. Scoring uses them in place of its own forward and backward
        pass, and does not validate that batch again (the fit did). None (the default):
        scoring computes them.
        """
        return None

    def self_scores(self, ctx: FitContext, loader: DataLoader) -> Tensor:
        """Self-influence `Tensor [n_blocks, n]` (float64) of the examples of `loader`."""
        batches = ctx.checked(loader, "inputs", "self-influence")
        return preconditioned_self_scores(self.block_gradients(ctx), self.inverse_hvp, batches)

    def block_gradients(self, ctx: FitContext) -> BlockGradients:
        """Per-example loss gradients of the fitted blocks, in memory-bounded chunks."""
        return BlockGradients(ctx.model, ctx.loss, ctx.engine, self.blocks)

    def export(self) -> dict[str, Any] | None:
        """The fitted state as tensors and plain values, or None (cannot be restored).

        The score store keeps it, so that a resumed run restores it instead of fitting.
        """
        return None

    def restore(self, ctx: FitContext, blocks: list[Block], state: dict[str, Any]) -> None:
        """Takes the place of `fit` with a state returned by `export`."""
        raise NotImplementedError(f"strategy {self.name!r} cannot restore a fitted state.")


class StrategySettings(Protocol):
    """An instance of a strategy's `Settings`, a frozen dataclass: `ExactSettings(...)`, ..."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


_REGISTRY: dict[str, type[CurvatureStrategy]] = {}


def register_strategy(cls: type[CurvatureStrategy]) -> type[CurvatureStrategy]:
    """Class decorator that makes a strategy available by its `name`."""
    settings = cls.Settings
    # typeshed does not declare __dataclass_params__
    if not (dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__}.Settings must be a frozen dataclass.")
    _REGISTRY[cls.name] = cls
    return cls


def available_strategies() -> list[str]:
    """Names accepted by `LayerInfluence(hessian=...)`."""
    return sorted(_REGISTRY)


def shardable_strategies() -> list[str]:
    """Names of the strategies that can be split across processes (torch.distributed)."""
    return [name for name in available_strategies() if _REGISTRY[name].shardable]


def make_strategy(
    hessian: str | StrategySettings, damping: float, **overrides: Any
) -> CurvatureStrategy:
    """Instantiates a strategy from its name or from an instance of its Settings.

    Args:
        hessian: A registered name, or an instance of a strategy's Settings.
        damping: λ added to every Hessian block.
        **overrides: Settings fields to set (e.g. `checkpoints=` for "tracin").
    """
    if isinstance(hessian, str):
        if hessian not in _REGISTRY:
            raise ValueError(
                f"unknown hessian strategy {hessian!r}; available: {available_strategies()}."
            )
        cls, settings = _REGISTRY[hessian], None
    else:
        found = next((c for c in _REGISTRY.values() if type(hessian) is c.Settings), None)
        if found is None:
            raise TypeError(
                f"hessian must be a strategy name {available_strategies()} or a strategy's "
                f"Settings instance; got {type(hessian).__name__}."
            )
        cls, settings = found, hessian
    fields = {f.name for f in dataclasses.fields(cls.Settings)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        owners = sorted(
            name
            for name, other in _REGISTRY.items()
            if set(unknown) <= {f.name for f in dataclasses.fields(other.Settings)}
        )
        hint = f" They are settings of hessian={owners[0]!r}." if len(owners) == 1 else ""
        raise TypeError(
            f"hessian={cls.name!r} takes no argument {unknown}; its settings are "
            f"{sorted(fields)}.{hint}"
        )
    settings = (
        cls.Settings(**overrides)
        if settings is None
        else dataclasses.replace(settings, **overrides)
    )
    return cls(settings, damping)
