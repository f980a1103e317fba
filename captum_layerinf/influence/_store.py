"""On-disk score store: chunks `[n_layers, n_test, train-chunk]` that survive the process.

Layout of one score set (one kind of score for one set of test inputs)::

    <dir>/manifest.json          shape, layers, chunk bounds, fingerprint
    <dir>/chunks/00000.npy       scores of training examples [start, stop), float64
    <dir>/chunks/00000.json      the chunk's record: checksum, creation time, run, rank

Every file is written to a temporary name, synced, then renamed (`os.replace`), and a
chunk's record is written after its data: a chunk is finished exactly when its record
exists, so a process killed at any moment leaves finished chunks and nothing half-written.
Every record carries the fingerprint of the score set it was written for and is checked
when read; the check-and-write of a manifest holds an exclusive lock (`locked`), so two
processes with different settings can never both adopt one directory.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from captum.influence._utils.common import KMostInfluentialResults
from torch import Tensor

from ._collect import ScoreCollector

try:
    import fcntl
except ImportError:  # Windows: no flock; directories are not shared between processes there
    fcntl = None  # type: ignore[assignment]

MANIFEST = "manifest.json"
FORMAT = 2
LOCK = ".lock"
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
_RECORD_FIELDS = {"index": int, "start": int, "stop": int, "file": str, "shape": list,
                  "dtype": str, "blake2b": str, "fingerprint": str}  # fmt: skip


class StoreMismatchError(ValueError):
    """The directory holds scores of another run (another fingerprint)."""


class CorruptChunkError(ValueError):
    """A chunk file cannot be read back as written."""


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Writes `path` through a temporary file and a rename; nothing partial is left.

    A full disk (`ENOSPC`, `EDQUOT`) raises an `OSError` that names the file and the fix.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(
                e.errno,
                f"no space left on the device while writing {path}; nothing partial was "
                "kept. Free disk space (or pass another output_dir) and rerun: finished "
                "chunks are kept and only the missing ones are computed.",
            ) from e
        raise


def write_json(path: Path, obj: Any) -> None:
    """Writes `obj` as indented JSON, atomically."""
    data = json.dumps(obj, indent=1, sort_keys=True).encode()
    atomic_write(path, lambda f: f.write(data))


def read_json(path: Path, fix: str = "") -> Any:
    """Reads a JSON file written by `write_json`.

    Raises:
        CorruptChunkError: The file is not valid JSON (truncated, edited), naming `fix`.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptChunkError(f"{path} is not valid JSON ({e}). {fix}".strip()) from e


def read_json_object(path: Path, required: dict[str, type], fix: str) -> dict[str, Any]:
    """Reads a JSON object and checks that it has the `required` fields and types.

    Raises:
        CorruptChunkError: The file is unreadable or lacks a field, naming the file and `fix`.
    """
    obj = read_json(path, fix)
    bad = (
        [k for k, t in required.items() if not isinstance(obj.get(k), t)]
        if isinstance(obj, dict)
        else list(required)
    )
    if bad:
        raise CorruptChunkError(f"{path} lacks or mangles the field(s) {bad}. {fix}")
    return obj


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Holds an exclusive `flock` on `folder/.lock` (also against threads of this process).

    On read-only media, where nobody can write, the lock is skipped; so it is where
    `fcntl` does not exist (Windows).
    """
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno not in _READ_ONLY:
            raise
        try:
            fd = os.open(folder / LOCK, os.O_RDONLY)
        except OSError:
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temporaries(folder: Path) -> None:
    """Deletes temporary files left by killed processes (named `.NAME.PID.tmp`)."""
    for tmp in folder.glob(".*.tmp"):
        try:
            pid = int(tmp.name.split(".")[-2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _alive(pid):
            try:
                tmp.unlink(missing_ok=True)
            except OSError as e:
                # Read-only media: nobody writes there, the leftover harms no reader.
                if e.errno not in _READ_ONLY:
                    raise


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _checksum(array: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(array).data.cast("B"), digest_size=16).hexdigest()


class ScoreStore:
    """A score set on disk: read back chunk by chunk as memory-mapped tensors.

    Open one that `LayerInfluence(..., output_dir=...)` wrote (the score sets are the
    sub-directories holding a `manifest.json`; `ScoreStore.find(output_dir)` lists them).

    Args:
        path: The score set's directory.

    Examples:
        >>> store = ScoreStore.find(output_dir)[0]
        >>> store.chunk(0)            # memory-mapped Tensor [n_layers, n_test, chunk]
        >>> store.topk(5)             # KMostInfluentialResults, fields [n_layers, n_test, 5]
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.path} is not a score set: it has no {MANIFEST}.")
        self.manifest = read_json_object(
            manifest_path,
            {"bounds": list, "shape": list, "layers": list, "fingerprint": str},
            f"Delete the score set {self.path} and rerun: its scores are recomputed.",
        )
        self.bounds: list[tuple[int, int]] = [tuple(b) for b in self.manifest["bounds"]]
        self.shape: tuple[int, int, int] = tuple(self.manifest["shape"])
        self.layers: list[str] = self.manifest["layers"]

    @classmethod
    def create(
        cls, path: str | os.PathLike, manifest: dict[str, Any], clean: bool = True
    ) -> ScoreStore:
        """Opens the score set at `path`, writing its manifest first if it has none.

        The check-and-write holds the directory's lock. With `clean`, temporary files of
        killed writers are deleted (one process only: under torch.distributed, rank 0
        before the others start writing). A directory that only needs reading (every
        chunk there, on read-only media) is never written.

        Raises:
            StoreMismatchError: The directory holds a score set with another fingerprint,
                or chunks without the manifest that says whose they are.
        """
        path = Path(path)
        if not (path / MANIFEST).is_file():
            path.mkdir(parents=True, exist_ok=True)
        with locked(path):
            if not (path / MANIFEST).is_file():
                orphans = sorted(p.name for p in (path / "chunks").glob("[!.]*"))
                if orphans:
                    raise StoreMismatchError(
                        f"{path} holds score chunks ({', '.join(orphans[:4])}, ...) but no "
                        f"{MANIFEST}, so nothing says which run wrote them; they are never "
                        "adopted. Delete that directory to start over, or pass another "
                        "output_dir."
                    )
                (path / "chunks").mkdir(exist_ok=True)
                write_json(path / MANIFEST, {"format": FORMAT, **manifest})
            store = cls(path)
        if store.manifest.get("fingerprint") != manifest["fingerprint"]:
            raise StoreMismatchError(
                f"{path} holds scores with fingerprint {store.manifest.get('fingerprint')}, not "
                f"{manifest['fingerprint']} (another model, data, settings or test inputs). "
                "Use another output_dir, or delete this directory to start over."
            )
        if clean:
            remove_stale_temporaries(path / "chunks")
        return store

    @classmethod
    def find(cls, output_dir: str | os.PathLike) -> list[ScoreStore]:
        """The score sets under `output_dir`, sorted by directory name."""
        return [cls(p.parent) for p in sorted(Path(output_dir).glob(f"*/{MANIFEST}"))]

    # -------------------------------------------------------------- chunk files

    @property
    def n_chunks(self) -> int:
        """Number of chunks."""
        return len(self.bounds)

    def _file(self, index: int, suffix: str) -> Path:
        return self.path / "chunks" / f"{index:05d}{suffix}"

    def record(self, index: int) -> dict[str, Any] | None:
        """The record of a finished chunk (None while it is missing).

        Raises:
            CorruptChunkError: The record is unreadable or lacks a field.
            StoreMismatchError: The record was written for another score set.
        """
        path = self._file(index, ".json")
        if not path.is_file():
            return None
        fix = (
            f"Delete it and {path.with_suffix('.npy').name} beside it, then rerun: only "
            "missing chunks are recomputed."
        )
        record = read_json_object(path, _RECORD_FIELDS, fix)
        if record["fingerprint"] != self.manifest["fingerprint"]:
            raise StoreMismatchError(
                f"the chunk record {path} was written for the score set with fingerprint "
                f"{record['fingerprint']}, not this one ({self.manifest['fingerprint']}): "
                f"it belongs to another run and is never adopted. {fix}"
            )
        if [record["index"], record["start"], record["stop"]] != [index, *self.bounds[index]]:
            raise CorruptChunkError(
                f"the chunk record {path} is for examples [{record['start']}, "
                f"{record['stop']}), not {list(self.bounds[index])}. {fix}"
            )
        return record

    def records(self) -> list[dict[str, Any] | None]:
        """Records of every chunk, None for missing ones."""
        return [self.record(i) for i in range(self.n_chunks)]

    def missing(self) -> list[int]:
        """Indices of the chunks not finished yet."""
        return [i for i in range(self.n_chunks) if not self._file(i, ".json").is_file()]

    def write(self, index: int, scores: Tensor, **info: Any) -> None:
        """Writes chunk `index` (scores `[n_layers, n_test, stop - start]`), then its record."""
        start, stop = self.bounds[index]
        expected = (self.shape[0], self.shape[1], stop - start)
        if tuple(scores.shape) != expected:
            raise ValueError(f"chunk {index} has shape {tuple(scores.shape)}, expected {expected}.")
        array = scores.detach().to("cpu", torch.float64).contiguous().numpy()
        atomic_write(self._file(index, ".npy"), lambda f: np.save(f, array))
        record = {
            "index": index,
            "start": start,
            "stop": stop,
            "file": self._file(index, ".npy").name,
            "shape": list(array.shape),
            "dtype": str(array.dtype),
            "blake2b": _checksum(array),
            "fingerprint": self.manifest["fingerprint"],
            "created": time.time(),
            "pid": os.getpid(),
            **info,
        }
        write_json(self._file(index, ".json"), record)

    def chunk(self, index: int) -> Tensor:
        """Chunk `index` as a memory-mapped `Tensor [n_layers, n_test, stop - start]`.

        Raises:
            FileNotFoundError: The chunk is not finished.
            CorruptChunkError: Its file does not match its record (checksum, shape).
            StoreMismatchError: Its record belongs to another score set.
        """
        record = self.record(index)
        path = self._file(index, ".npy")
        if record is None:
            raise FileNotFoundError(f"chunk {index} of {self.path} is not finished.")
        fix = (
            f"Delete {path} and its record {path.with_suffix('.json')}, then rerun: only "
            "missing chunks are recomputed."
        )
        try:
            # Copy-on-write mapping: pages are read on demand, the file is never written.
            array = np.load(path, mmap_mode="c")
        except (OSError, ValueError, EOFError) as e:
            raise CorruptChunkError(f"score chunk {path} is unreadable ({e}). {fix}") from e
        if list(array.shape) != record["shape"] or str(array.dtype) != record["dtype"]:
            raise CorruptChunkError(
                f"score chunk {path} holds {array.dtype} {list(array.shape)}, its record says "
                f"{record['dtype']} {record['shape']}. {fix}"
            )
        if _checksum(array) != record["blake2b"]:
            raise CorruptChunkError(f"score chunk {path} is corrupted (checksum mismatch). {fix}")
        return torch.from_numpy(array)

    def chunks(self) -> Iterator[Tensor]:
        """Every chunk in training order, memory-mapped."""
        for i in range(self.n_chunks):
            yield self.chunk(i)

    def read(self) -> Tensor:
        """All scores, `Tensor [n_layers, n_test, n_train]` (float64, in memory)."""
        return torch.cat(list(self.chunks()), dim=-1)

    def topk(
        self, k: int, proponents: bool = True, reduce_layers: bool = False
    ) -> KMostInfluentialResults:
        """The `k` most influential training examples, merged chunk by chunk.

        Args:
            k: Number of examples.
            proponents: Largest (True) or smallest scores.
            reduce_layers: Rank the compound score Σ_l s_l instead of each layer.

        Returns:
            `KMostInfluentialResults` with fields `[n_layers, n_test, k]`, or `[n_test, k]`
            with `reduce_layers`.
        """
        collector = ScoreCollector(k, proponents)
        for chunk in self.chunks():
            collector.add(chunk.sum(0) if reduce_layers else chunk)
        return collector.result()
