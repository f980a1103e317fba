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
from ._fingerprint import differing, digest, loader_digest, qualname, settings_digest
from ._store import (
    CorruptChunkError,
    ScoreStore,
    StoreMismatchError,
    atomic_write,
    read_json,
    write_json,
)
from .strategies import CurvatureStrategy, FitContext, make_strategy

if TYPE_CHECKING:
    from .layer_influence import LayerInfluence

COMPONENTS = {
    "model": "the model's weights",
    "train_data": "the training data",
    "layers": "the layers",
    "strategy": "the hessian strategy or its settings",
    "damping": "the damping",
    "loss": "the loss",
    "query_rank": "query_rank",
}


def run_fingerprint(li: LayerInfluence) -> tuple[dict[str, str], list[int]]:
    """Hashes of what determines the scores, by component, and the training batch sizes."""
    data, sizes = loader_digest(li.train_dataloader, "train_dataset")
    strategy = make_strategy(li.hessian, li.damping, **li._strategy_args)
    parts = {
        "model": digest(dict(li.model.state_dict())),
        "train_data": data,
        "layers": digest(list(li.layer_names)),
        "strategy": settings_digest(strategy.name, strategy.settings),
        "damping": digest(li.damping),
        "loss": digest(li.loss.fn),
        "query_rank": digest(li.query_rank),
    }
    return parts, sizes


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
    stored = read_json(root / "fingerprint.json")["components"]
    changed = differing(stored, parts)
    if changed:
        what = ", ".join(COMPONENTS.get(c, c) for c in changed)
        raise StoreMismatchError(
            f"output_dir {str(root)!r} holds scores of another run: {what} differ(s) from the "
            "stored run (fingerprint.json). Pass another output_dir for this run, or delete "
            "that directory to start over; scores are never mixed."
        )


def open_store(
    li: LayerInfluence, which: str, test_loader: DataLoader, shard: Shard | None
) -> ScoreStore:
    """Opens (or creates) the score set of this run and these test inputs."""
    from .layer_influence import GLOBAL

    if li._store_key is None:
        li._store_key = run_fingerprint(li)
    parts, sizes = li._store_key
    root = Path(li.output_dir)
    lead = shard is None or shard.rank == 0
    if lead:
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "fingerprint.json").is_file():
            write_json(
                root / "arguments.json", run_arguments(li, sizes, shard.world if shard else 1)
            )
            write_json(
                root / "fingerprint.json", {"components": parts, "fingerprint": digest(parts)}
            )
    if shard is not None:
        shard.barrier()
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
    if lead:
        ScoreStore.create(path, manifest)
    if shard is not None:
        shard.barrier()
    return ScoreStore.create(path, manifest, clean=False)


def _select(ctx: FitContext, wanted: list[int]) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
    """The training batches with the wanted indices, validated, in order."""
    remaining = set(wanted)
    bar = tqdm(total=len(wanted), desc="score chunks", disable=not ctx.show_progress, leave=False)
    with bar:
        for i, batch in enumerate(ctx.train_loader):
            if not remaining:
                return
            if i in remaining:
                remaining.discard(i)
                inputs, labels = split_batch(batch, ctx.device, "train_dataset")
                ctx.validate_batch(inputs, labels, "train_dataset")
                yield inputs, labels
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
    scored = li._score_batches(strategy, ctx, test_loader, _select(ctx, wanted))
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
    path = store.path.parent / f"curvature-{store.manifest['kind']}.pt"
    exists = path.is_file() if shard is None else shard.broadcast(path.is_file())
    if exists:
        try:
            state = torch.load(path, map_location=li.device, weights_only=True)
        except Exception as e:
            raise CorruptChunkError(
                f"the curvature file {path} is unreadable ({type(e).__name__}). Delete it and "
                "rerun: the curvature is refitted."
            ) from e
        return li._fit(which, show_progress, state=state)
    strategy, ctx = li._fit(which, show_progress)
    state = strategy.export()
    if state is not None and (shard is None or shard.rank == 0):
        atomic_write(path, lambda f: torch.save(state, f))
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
