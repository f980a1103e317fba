"""The curvature-strategy interface and the registry that maps names to strategies."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..._utils.data import iter_batches
from ..._utils.losses import ExampleLoss
from .._gradients import GradientEngine

if TYPE_CHECKING:
    from .._distributed import Shard


@dataclass(frozen=True)
class Block:
    """A set of parameters that shares one Hessian block.

    Attributes:
        name: Layer name (dotted, "" for a model that is one layer) or "<global>".
        layers: Module names the block covers (None: the whole model).
        param_names: Names as in `model.named_parameters()`.
        numel: Number of scalar parameters, P.
    """

    name: str
    layers: tuple[str, ...] | None
    param_names: tuple[str, ...]
    numel: int


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

    def batches(self, desc: str) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        """One pass over (this rank's share of) the training set, batches validated."""
        return self.checked(self.train_loader, "train_dataset", desc, own=True)

    def own_batches(self) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        """This rank's training batches on the device, not validated (already done by fit)."""
        for _, inputs, labels in self.own_indexed_batches():
            yield inputs, labels

    def own_indexed_batches(self) -> Iterator[tuple[int, tuple[Tensor, ...], Tensor]]:
        """`own_batches` with each batch's index in the training loader."""
        for i, batch in enumerate(iter_batches(self.train_loader, self.device, "train_dataset")):
            if self.shard is None or self.shard.owns(i):
                yield i, *batch

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
        bar = tqdm(total=len(loader), desc=desc, disable=not self.show_progress, leave=False)
        with bar:
            for i, (inputs, labels) in enumerate(iter_batches(loader, self.device, what)):
                bar.update()
                if own and self.shard is not None and not self.shard.owns(i):
                    continue
                self.validate_batch(inputs, labels, what)
                yield inputs, labels

    def validate_batch(self, inputs: tuple[Tensor, ...], labels: Tensor, what: str) -> None:
        """Runs the model on a batch, checking labels and losses; explains shape errors."""
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
    defaults) and register themselves with `@register_strategy`. A strategy that cannot be
    written as an inverse-Hessian product (it computes whole scores itself) sets
    `delegates_scoring = True` and implements `scores` and `self_scores` instead.
    """

    name: ClassVar[str]
    Settings: ClassVar[type]
    delegates_scoring: ClassVar[bool] = False
    shardable: ClassVar[bool] = False
    """Whether `fit` is correct under torch.distributed with a sharded `FitContext`
    (sums over the training set all-reduced); others raise an error there."""
    keep_factors: bool = False
    """Set by `LayerInfluence` on the strategy it scores with (not on strategies used
    inside another): a strategy that can keep the training batches' pieces for scoring
    (`kept_factors`) does so only then."""

    def __init__(self, settings: Any, damping: float) -> None:
        self.settings = settings
        self.damping = damping
        self.blocks: list[Block] = []

    @abstractmethod
    def fit(self, ctx: FitContext, blocks: list[Block]) -> None:
        """Builds whatever `inverse_hvp` needs for every block."""

    def inverse_hvp(self, block: int, vectors: Tensor) -> Tensor:
        """Returns `(H_b + damping I)^{-1} v` for each row v of `vectors [m, P]`, in float64."""
        raise NotImplementedError(f"strategy {self.name!r} does not provide inverse_hvp.")

    def kept_factors(self, batch: int) -> dict[int, tuple[Tensor, Tensor]] | None:
        """The pieces `{block: (a, g)}` of training batch `batch`, kept by `fit`, or None.

        `batch` is the batch's index in the training loader. For the Linear/Conv blocks
        of `BlockGradients.factors`: `a` the layer's inputs and `g` its output gradients of
        the true-label loss. Scoring uses them in place of its own forward and backward
        pass, and does not validate that batch again (the fit did). None (the default):
        scoring computes them.
        """
        return None

    def scores(self, ctx: FitContext, test_loader: DataLoader) -> Tensor:
        """Scores `Tensor [n_blocks, n_test, n_train]` (delegating strategies only)."""
        raise NotImplementedError(f"strategy {self.name!r} does not compute scores itself.")

    def self_scores(self, ctx: FitContext, loader: DataLoader) -> Tensor:
        """Self-influence `Tensor [n_blocks, n]` (delegating strategies only)."""
        raise NotImplementedError(f"strategy {self.name!r} does not compute scores itself.")

    def export(self) -> dict[str, Any] | None:
        """The fitted state as tensors and plain values, or None (cannot be restored).

        The score store keeps it, so that a resumed run restores it instead of fitting.
        """
        return None

    def restore(self, ctx: FitContext, blocks: list[Block], state: dict[str, Any]) -> None:
        """Takes the place of `fit` with a state returned by `export`."""
        raise NotImplementedError(f"strategy {self.name!r} cannot restore a fitted state.")


_REGISTRY: dict[str, type[CurvatureStrategy]] = {}


def register_strategy(cls: type[CurvatureStrategy]) -> type[CurvatureStrategy]:
    """Class decorator that makes a strategy available by its `name`."""
    if not (dataclasses.is_dataclass(cls.Settings) and cls.Settings.__dataclass_params__.frozen):
        raise TypeError(f"{cls.__name__}.Settings must be a frozen dataclass.")
    _REGISTRY[cls.name] = cls
    return cls


def available_strategies() -> list[str]:
    """Names accepted by `LayerInfluence(hessian=...)`."""
    return sorted(_REGISTRY)


def shardable_strategies() -> list[str]:
    """Names of the strategies that can be split across processes (torch.distributed)."""
    return [name for name in available_strategies() if _REGISTRY[name].shardable]


def make_strategy(hessian: str | Any, damping: float, **overrides: Any) -> CurvatureStrategy:
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
        cls = next((c for c in _REGISTRY.values() if type(hessian) is c.Settings), None)
        if cls is None:
            raise TypeError(
                f"hessian must be a strategy name {available_strategies()} or a strategy's "
                f"Settings instance; got {type(hessian).__name__}."
            )
        settings = hessian
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
