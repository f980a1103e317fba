"""Score chunks in training order: computed once, kept on disk, resumed, sharded by rank.

`LayerInfluence` uses this path when it has an `output_dir` or runs under
torch.distributed. A chunk is the scores of one training batch, `[n_blocks, n_test, B]`.
Everything here receives explicit values (`RunSpec`, the store, the shard) and a `fit`
callable; it holds no state of its own.
"""

from __future__ import annotations

import dataclasses
import itertools
import platform
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .._utils.data import split_batch
from .._utils.losses import ExampleLoss
from .._version import __version__
from ._blocks import Scope
from ._distributed import Shard
from ._fingerprint import (
    UnidentifiableError,
    differing,
    digest,
    loader_digest,
    module_code,
    qualname,
    settings_digest,
)
from ._scoring import QUERY_SEED
from ._store import (
    FORMAT,
    MANIFEST,
    CorruptChunkError,
    ScoreStore,
    StoreMismatchError,
    atomic_write,
    locked,
    read_json,
    read_json_object,
    remove_stale_temporaries,
    write_json,
)
from .strategies import AutoStrategy, CurvatureStrategy, FitContext

COMPONENTS = {
    "format": "the store's format (written by another version of captum-layerinf)",
    "model": "the model's weights",
    "model_code": "the model's code (module classes, their settings, forward or hooks)",
    "train_data": "the training data",
    "batches": "the training batch sizes (batch_size or the DataLoader's batching: one "
    "chunk is stored per batch, so pass the batch size of the stored run)",
    "layers": "the layers",
    "strategy": "the hessian strategy or its settings",
    "damping": "the damping",
    "loss": "the loss",
    "query_rank": "query_rank (or the seed of its randomized SVD)",
}
FINGERPRINT = "fingerprint.json"

FitFn = Callable[[dict[str, Any] | None], tuple[CurvatureStrategy, FitContext]]
"""`fit(state)`: the fitted strategy and its context; restored from `state` (a strategy's
`export()`) when one is given, else fitted."""


@dataclass(frozen=True)
class RunSpec:
    """What determines a run's scores: hashed into its fingerprint, written next to them.

    Attributes:
        model: The model.
        train_loader: The training batches.
        layer_names: The selected layers.
        strategy: An unfitted instance of the strategy (its name and settings).
        damping: λ.
        loss: The per-example loss.
        output_fn: The model-output selector, or None.
        query_rank: The test side's rank, or None.
        batch_size: The batch size Datasets are iterated with.
    """

    model: nn.Module
    train_loader: DataLoader
    layer_names: list[str]
    strategy: CurvatureStrategy
    damping: float
    loss: ExampleLoss
    output_fn: Callable[[Any], Tensor] | None
    query_rank: int | None
    batch_size: int


@dataclass(frozen=True)
class StoredRun:
    """A run's score set on disk for one scope and set of test inputs, and its curvature file.

    Attributes:
        scores: The score store.
        curvature: Path of the fitted curvature of this run and scope (any test inputs).
        curvature_fingerprint: Identity of that curvature: the run's and the scope's.
    """

    scores: ScoreStore
    curvature: Path
    curvature_fingerprint: str


def run_fingerprint(run: RunSpec) -> tuple[dict[str, str], list[int]]:
    """Hashes of what determines the scores, by component, and the training batch sizes."""
    data, sizes = loader_digest(run.train_loader, "train_dataset")
    strategy = run.strategy
    parts = {
        "format": digest(FORMAT),
        "model": digest(dict(run.model.state_dict())),
        "model_code": _identity(lambda: digest(module_code(run.model)), "the model"),
        "train_data": data,
        "batches": digest(sizes),
        "layers": digest(list(run.layer_names)),
        "strategy": _identity(
            lambda: settings_digest(strategy.name, strategy.settings), "the strategy settings"
        ),
        "damping": digest(run.damping),
        "loss": _identity(lambda: digest(run.loss.fn), "loss_fn"),
        "output_fn": _identity(lambda: digest(run.output_fn), "output_fn"),
        "query_rank": digest((run.query_rank, QUERY_SEED)),
    }
    return parts, sizes


def _identity(compute: Any, what: str) -> str:
    try:
        return compute()
    except UnidentifiableError as e:
        raise ValueError(
            f"output_dir needs to recognise {what} on a rerun, but its identity cannot be "
            f"established ({e}), so stored scores could be reused for another one. Make it "
            "hashable: a module-level function, functools.partial of one, or an nn.Module "
            "whose settings are attributes; or run without output_dir."
        ) from None


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Tensor):
        return f"Tensor{list(value.shape)}"
    if isinstance(value, dict):
        return f"dict of {len(value)} entries"
    return qualname(value)


def run_arguments(run: RunSpec, sizes: list[int], world: int) -> dict[str, Any]:
    """The run's arguments as JSON-ready values (written next to the scores)."""
    settings = run.strategy.settings
    return {
        "model": qualname(run.model),
        "n_parameters": sum(p.numel() for p in run.model.parameters()),
        "layers": list(run.layer_names),
        "hessian": run.strategy.name,
        "settings": {
            f.name: _jsonable(getattr(settings, f.name)) for f in dataclasses.fields(settings)
        },
        "damping": run.damping,
        "batch_size": run.batch_size,
        "query_rank": run.query_rank,
        "loss": qualname(run.loss.fn),
        "n_train": sum(sizes),
        "train_batches": len(sizes),
        "world_size": world,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "captum_layerinf": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def record_strategies(root: Path, strategy: CurvatureStrategy) -> None:
    """Adds the fitted blocks' `(strategy, reason)` to `arguments.json` (key "strategies").

    The per-layer choices of `hessian="auto"` are known only once the curvature is fitted
    (a probe decides some), after the arguments were written. The entries read as
    `LayerInfluence.strategies` does.
    """
    if isinstance(strategy, AutoStrategy):
        chosen = {b.name: list(strategy.choices[b.name]) for b in strategy.blocks}
    else:
        given = [strategy.name, f"hessian={strategy.name!r} was given"]
        chosen = {b.name: given for b in strategy.blocks}
    path = root / "arguments.json"
    with locked(root):
        if not path.is_file():
            return
        arguments = read_json(path)
        if not isinstance(arguments, dict):
            return
        arguments.setdefault("strategies", {}).update(chosen)
        write_json(path, arguments)


def _check_root(root: Path, parts: dict[str, str]) -> None:
    stored = read_json_object(
        root / FINGERPRINT,
        {"components": dict, "fingerprint": str},
        f"Without it nothing says which run wrote {root}: delete that directory to start "
        "over, or pass another output_dir.",
    )["components"]
    changed = differing(stored, parts)
    if changed:
        what = ", ".join(COMPONENTS.get(c, c) for c in changed)
        raise StoreMismatchError(
            f"output_dir {str(root)!r} holds scores of another run: {what} differ(s) from the "
            f"stored run ({FINGERPRINT}). Pass another output_dir for this run, or delete "
            "that directory to start over; scores are never mixed."
        )


def _artefacts(root: Path) -> list[str]:
    """Files and score sets whose identity `fingerprint.json` vouches for."""
    found = [p.name for p in root.glob("curvature-*.pt")]
    found += [p.parent.name for p in root.glob(f"*/{MANIFEST}")]
    found += [p.parent.parent.name for p in root.glob("*/chunks/[!.]*")]
    return sorted(set(found))


def _claim_root(root: Path, parts: dict[str, str], arguments: dict[str, Any]) -> None:
    """Writes the run's identity into an empty `root`, or checks it, under the lock."""
    with locked(root):
        if not (root / FINGERPRINT).is_file():
            orphans = _artefacts(root)
            if orphans:
                raise StoreMismatchError(
                    f"output_dir {str(root)!r} holds {', '.join(orphans)} but no {FINGERPRINT}, "
                    "so nothing says which model, data and settings they were computed with; "
                    "they are never adopted. Delete that directory to start over (or restore "
                    f"its {FINGERPRINT}), or pass another output_dir."
                )
            # Identity first: a kill between the two files leaves a claimed directory.
            write_json(root / FINGERPRINT, {"components": parts, "fingerprint": digest(parts)})
        _check_root(root, parts)
        if not (root / "arguments.json").is_file():
            write_json(root / "arguments.json", arguments)
        remove_stale_temporaries(root)


def open_store(
    root: Path,
    run: RunSpec,
    key: tuple[dict[str, str], list[int]],
    scope: Scope,
    test_loader: DataLoader,
    shard: Shard | None,
) -> StoredRun:
    """Opens (or creates) the score set of this run, scope and test inputs under `root`.

    Args:
        root: The run's directory (`output_dir`).
        run: What determines the scores.
        key: `run_fingerprint(run)` (computed once by the caller: it reads the data).
        scope: Layer-wise or global scores.
        test_loader: The test inputs.
        shard: This process's share under torch.distributed, or None.
    """
    parts, sizes = key
    root = Path(root)

    def claim() -> None:
        if not root.is_dir():
            root.mkdir(parents=True, exist_ok=True)
        _claim_root(root, parts, run_arguments(run, sizes, shard.world if shard else 1))

    _on_lead(shard, claim)
    if shard is not None:
        _check_root(root, parts)
    test_key, test_sizes = loader_digest(test_loader, "inputs")
    is_global = Scope(scope) is Scope.GLOBAL
    kind = "global" if is_global else "layers"
    starts = [0, *itertools.accumulate(sizes)]
    manifest = {
        "kind": kind,
        "layers": [Scope.GLOBAL.value] if is_global else list(run.layer_names),
        "shape": [1 if is_global else len(run.layer_names), sum(test_sizes), sum(sizes)],
        "bounds": [[a, b] for a, b in itertools.pairwise(starts)],
        "test_data": test_key,
        "fingerprint": digest((parts, test_key, kind)),
    }
    path = root / f"{kind}-{test_key[:16]}"
    _on_lead(shard, lambda: ScoreStore.create(path, manifest))
    # The curvature depends on the run and the kind, not on the test inputs.
    return StoredRun(
        scores=ScoreStore.create(path, manifest, clean=False),
        curvature=root / f"curvature-{kind}.pt",
        curvature_fingerprint=digest((parts, kind)),
    )


def _on_lead(shard: Shard | None, action: Any) -> None:
    """Runs `action` on rank 0 (or alone), then syncs; its error is raised on every rank."""
    error = None
    if shard is None or shard.rank == 0:
        try:
            action()
        except Exception as e:
            if shard is None:
                raise
            error = e
    if shard is None:
        return
    message = shard.broadcast(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    if message is not None:
        raise StoreMismatchError(f"rank 0 could not open the store: {message}")


def _select(ctx: FitContext, wanted: list[int]) -> Iterator[tuple[int, tuple[Tensor, ...], Tensor]]:
    """`(index, inputs, labels)` of the training batches with the wanted indices, in order.

    Not validated: `CurvatureStrategy.scoring_batches` validates those it scores.
    """
    remaining = set(wanted)
    bar = tqdm(total=len(wanted), desc="score chunks", disable=not ctx.show_progress, leave=False)
    with bar:
        for i, batch in enumerate(ctx.train_loader):
            if not remaining:
                return
            if i in remaining:
                remaining.discard(i)
                inputs, labels = split_batch(batch, ctx.device, "train_dataset")
                yield i, inputs, labels
                bar.update()


def _computed(
    strategy: CurvatureStrategy,
    ctx: FitContext,
    test_loader: DataLoader,
    wanted: list[int],
    query_rank: int | None,
) -> Iterator[tuple[int, Tensor, float]]:
    """`(index, chunk, seconds)` for each wanted training batch."""
    if not wanted:
        return
    start = time.perf_counter()
    scored = strategy.scores(ctx, test_loader, lambda desc: _select(ctx, wanted), query_rank)
    for i, chunk in zip(wanted, scored, strict=True):
        now = time.perf_counter()
        yield i, chunk, now - start
        start = time.perf_counter()


def _fit_or_restore(
    fit: FitFn, stored: StoredRun, shard: Shard | None, device: torch.device
) -> tuple[CurvatureStrategy, FitContext]:
    """Fits the curvature, or restores it from the stored run's curvature file."""
    path, fingerprint = stored.curvature, stored.curvature_fingerprint
    exists = path.is_file() if shard is None else shard.broadcast(path.is_file())
    if exists:
        fix = "Delete it and rerun: the curvature is refitted."
        try:
            saved = torch.load(path, map_location=device, weights_only=True)
        except Exception as e:
            raise CorruptChunkError(
                f"the curvature file {path} is unreadable ({type(e).__name__}). {fix}"
            ) from e
        if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
            raise StoreMismatchError(
                f"the curvature file {path} was not fitted for this run (its fingerprint "
                "differs or is missing); it is never adopted. " + fix
            )
        fitted = fit(saved["state"])
        _on_lead(shard, lambda: record_strategies(stored.curvature.parent, fitted[0]))
        return fitted
    strategy, ctx = fit(None)
    _on_lead(shard, lambda: record_strategies(stored.curvature.parent, strategy))
    state = strategy.export()
    if state is not None and (shard is None or shard.rank == 0):
        record = {"fingerprint": fingerprint, "state": state}
        atomic_write(path, lambda f: torch.save(record, f))
    return strategy, ctx


def _keep(
    computed: Iterator[tuple[int, Tensor, float]], stored: StoredRun | None, rank: int
) -> dict[int, Tensor]:
    """Writes computed chunks to the store as they come; without one, returns them by index."""
    local: dict[int, Tensor] = {}
    run = uuid.uuid4().hex
    for i, chunk, seconds in computed:
        if stored is None:
            local[i] = chunk
        else:
            stored.scores.write(i, chunk, run=run, rank=rank, seconds=seconds)
    return local


def score_chunks(
    test_loader: DataLoader,
    fit: FitFn,
    *,
    fitted: bool,
    stored: StoredRun | None,
    sizes: list[int],
    shard: Shard | None,
    query_rank: int | None,
    device: torch.device,
) -> Iterator[Tensor]:
    """Score chunks `[n_blocks, n_test, B]` in training order, from disk where finished.

    Missing chunks are computed (by their owning rank under torch.distributed) and
    written; with everything on disk nothing is fitted and the chunks are only read.

    Args:
        test_loader: The test inputs.
        fit: Fits (or restores) the curvature; called only if chunks are missing.
        fitted: Whether `fit` returns an already fitted curvature (then no curvature
            file is read or written).
        stored: The score set on disk, or None (scores gathered over the ranks).
        sizes: The training batch sizes.
        shard: This process's share under torch.distributed, or None.
        query_rank: See `CurvatureStrategy.scores`.
        device: Where the chunks are returned (and a curvature file is loaded).
    """
    missing = list(range(len(sizes))) if stored is None else stored.scores.missing()
    if shard is not None:
        missing = shard.broadcast(missing)
    local: dict[int, Tensor] = {}
    if missing:
        if stored is None or fitted:
            strategy, ctx = fit(None)
        else:
            strategy, ctx = _fit_or_restore(fit, stored, shard, device)
        wanted = [i for i in missing if shard is None or shard.owns(i)]
        computed = _computed(strategy, ctx, test_loader, wanted, query_rank)
        local = _keep(computed, stored, 0 if shard is None else shard.rank)
    if stored is not None:
        if shard is not None:
            shard.barrier()
        for chunk in stored.scores.chunks():
            yield chunk.to(device)
        return
    if shard is not None:
        local = shard.gather(local)
    for i in range(len(sizes)):
        yield local[i].to(device)
