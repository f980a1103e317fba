"""Score chunks in training order: computed once, kept on disk, resumed, sharded by rank.

`LayerInfluence` uses this path when it has an `output_dir` or runs under
torch.distributed. A chunk is the scores of one training batch, `[n_blocks, n_test, B]`.
"""

from __future__ import annotations

import dataclasses
import itertools
import platform
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .._utils.data import split_batch
from ._distributed import Shard, current_shard
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
    read_json_object,
    remove_stale_temporaries,
    write_json,
)
from .strategies import CurvatureStrategy, FitContext, make_strategy

if TYPE_CHECKING:
    from .layer_influence import LayerInfluence

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


def run_fingerprint(li: LayerInfluence) -> tuple[dict[str, str], list[int]]:
    """Hashes of what determines the scores, by component, and the training batch sizes."""
    data, sizes = loader_digest(li.train_dataloader, "train_dataset")
    strategy = make_strategy(li.hessian, li.damping, **li._strategy_args)
    parts = {
        "format": digest(FORMAT),
        "model": digest(dict(li.model.state_dict())),
        "model_code": _identity(lambda: digest(module_code(li.model)), "the model"),
        "train_data": data,
        "batches": digest(sizes),
        "layers": digest(list(li.layer_names)),
        "strategy": _identity(
            lambda: settings_digest(strategy.name, strategy.settings), "the strategy settings"
        ),
        "damping": digest(li.damping),
        "loss": _identity(lambda: digest(li.loss.fn), "loss_fn"),
        "output_fn": _identity(lambda: digest(li.output_fn), "output_fn"),
        "query_rank": digest((li.query_rank, QUERY_SEED)),
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


def run_arguments(li: LayerInfluence, sizes: list[int], world: int) -> dict[str, Any]:
    """The run's arguments as JSON-ready values (written next to the scores)."""
    strategy = make_strategy(li.hessian, li.damping, **li._strategy_args)
    settings = strategy.settings
    return {
        "model": qualname(li.model),
        "n_parameters": sum(p.numel() for p in li.model.parameters()),
        "layers": list(li.layer_names),
        "hessian": strategy.name,
        "settings": {
            f.name: _jsonable(getattr(settings, f.name)) for f in dataclasses.fields(settings)
        },
        "damping": li.damping,
        "batch_size": li.batch_size,
        "query_rank": li.query_rank,
        "loss": qualname(li.loss.fn),
        "n_train": sum(sizes),
        "train_batches": len(sizes),
        "world_size": world,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "captum_layerinf": _version(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
    }


def _version() -> str:
    from .. import __version__

    return __version__


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
    li: LayerInfluence, which: str, test_loader: DataLoader, shard: Shard | None
) -> ScoreStore:
    """Opens (or creates) the score set of this run and these test inputs."""
    from .layer_influence import GLOBAL

    if li._store_key is None:
        li._store_key = run_fingerprint(li)
    parts, sizes = li._store_key
    root = Path(li.output_dir)

    def claim() -> None:
        if not root.is_dir():
            root.mkdir(parents=True, exist_ok=True)
        _claim_root(root, parts, run_arguments(li, sizes, shard.world if shard else 1))

    _on_lead(shard, claim)
    if shard is not None:
        _check_root(root, parts)
    test_key, test_sizes = loader_digest(test_loader, "inputs")
    kind = "global" if which == GLOBAL else "layers"
    starts = [0, *itertools.accumulate(sizes)]
    manifest = {
        "kind": kind,
        "layers": [GLOBAL] if which == GLOBAL else list(li.layer_names),
        "shape": [1 if which == GLOBAL else len(li.layer_names), sum(test_sizes), sum(sizes)],
        "bounds": [[a, b] for a, b in itertools.pairwise(starts)],
        "test_data": test_key,
        "fingerprint": digest((parts, test_key, kind)),
    }
    path = root / f"{kind}-{test_key[:16]}"
    _on_lead(shard, lambda: ScoreStore.create(path, manifest))
    return ScoreStore.create(path, manifest, clean=False)


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

    Not validated: `LayerInfluence._score_batches` validates those it computes.
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
    li: LayerInfluence,
    strategy: CurvatureStrategy,
    ctx: FitContext,
    test_loader: DataLoader,
    wanted: list[int],
    bounds: list[tuple[int, int]],
) -> Iterator[tuple[int, Tensor, float]]:
    """`(index, chunk, seconds)` for each wanted training batch."""
    if not wanted:
        return
    start = time.perf_counter()
    if strategy.delegates_scoring:
        scores = strategy.scores(ctx, test_loader).double()
        seconds = (time.perf_counter() - start) / len(wanted)
        for i in wanted:
            yield i, scores[..., bounds[i][0] : bounds[i][1]], seconds
        return
    scored = li._score_batches(strategy, ctx, test_loader, _select(ctx, wanted), indexed=True)
    for i, chunk in zip(wanted, scored, strict=True):
        now = time.perf_counter()
        yield i, chunk, now - start
        start = time.perf_counter()


def _fit_or_restore(
    li: LayerInfluence,
    which: str,
    store: ScoreStore | None,
    shard: Shard | None,
    show_progress: bool,
) -> tuple[CurvatureStrategy, FitContext]:
    """Fits the curvature, or restores it from the store's curvature file of this run."""
    if store is None or which in li._fitted:
        return li._fit(which, show_progress)
    kind = store.manifest["kind"]
    path = store.path.parent / f"curvature-{kind}.pt"
    # The curvature depends on the run and the kind, not on the test inputs.
    fingerprint = digest((li._store_key[0], kind))
    exists = path.is_file() if shard is None else shard.broadcast(path.is_file())
    if exists:
        fix = "Delete it and rerun: the curvature is refitted."
        try:
            saved = torch.load(path, map_location=li.device, weights_only=True)
        except Exception as e:
            raise CorruptChunkError(
                f"the curvature file {path} is unreadable ({type(e).__name__}). {fix}"
            ) from e
        if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
            raise StoreMismatchError(
                f"the curvature file {path} was not fitted for this run (its fingerprint "
                "differs or is missing); it is never adopted. " + fix
            )
        return li._fit(which, show_progress, state=saved["state"])
    strategy, ctx = li._fit(which, show_progress)
    state = strategy.export()
    if state is not None and (shard is None or shard.rank == 0):
        record = {"fingerprint": fingerprint, "state": state}
        atomic_write(path, lambda f: torch.save(record, f))
    return strategy, ctx


def score_chunks(
    li: LayerInfluence, which: str, test_loader: DataLoader, show_progress: bool
) -> Iterator[Tensor]:
    """Score chunks `[n_blocks, n_test, B]` in training order, from disk where finished.

    Missing chunks are computed (by their owning rank under torch.distributed) and
    written; with everything on disk nothing is fitted and the chunks are only read.
    """
    shard = current_shard(li.device)
    store = None
    if li.output_dir is not None:
        store = open_store(li, which, test_loader, shard)
        bounds, missing = store.bounds, store.missing()
    else:
        sizes = [len(batch[-1]) for batch in li.train_dataloader]
        starts = [0, *itertools.accumulate(sizes)]
        bounds, missing = list(itertools.pairwise(starts)), list(range(len(sizes)))
    if shard is not None:
        missing = shard.broadcast(missing)
    local: dict[int, Tensor] = {}
    if missing:
        strategy, ctx = _fit_or_restore(li, which, store, shard, show_progress)
        wanted = [i for i in missing if shard is None or shard.owns(i)]
        run = uuid.uuid4().hex
        rank = 0 if shard is None else shard.rank
        for i, chunk, seconds in _computed(li, strategy, ctx, test_loader, wanted, bounds):
            if store is None:
                local[i] = chunk
            else:
                store.write(i, chunk, run=run, rank=rank, seconds=seconds)
    if store is not None:
        if shard is not None:
            shard.barrier()
        for chunk in store.chunks():
            yield chunk.to(li.device)
        return
    if shard is not None:
        local = shard.gather(local)
    for i in range(len(bounds)):
        yield local[i].to(li.device)
