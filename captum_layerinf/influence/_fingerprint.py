"""Fingerprints: content hashes of model weights, data and settings, for the score store."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._utils.data import iter_batches


def digest(obj: Any) -> str:
    """A 32-hex-digit BLAKE2b hash of `obj`'s content (tensors by their bytes)."""
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj)
    return h.hexdigest()


def _feed_tensor(h, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def _feed(h, obj: Any) -> None:
    if isinstance(obj, Tensor):
        _feed_tensor(h, obj)
    elif isinstance(obj, np.ndarray):
        _feed_tensor(h, torch.from_numpy(np.ascontiguousarray(obj)))
    elif isinstance(obj, os.PathLike):
        # A file (e.g. a checkpoint): its content counts, not only its name.
        h.update(b"F")
        with open(obj, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    elif isinstance(obj, dict):
        h.update(b"D")
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(type(obj).__qualname__.encode())
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    elif isinstance(obj, nn.Module):
        _feed(h, module_state(obj))
    elif obj is None or isinstance(obj, (str, int, float, bool)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    else:
        # Functions and other objects: by name (their repr holds a memory address).
        h.update(f"{getattr(obj, '__module__', '')}.{qualname(obj)}".encode())


def qualname(obj: Any) -> str:
    """`module.Name` of a function or of an object's type."""
    target = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{target.__module__}.{target.__qualname__}"


def module_state(module: nn.Module) -> dict[str, Any]:
    """A module's type, simple attributes (e.g. `label_smoothing`) and state dict."""
    simple = {
        k: v
        for k, v in vars(module).items()
        if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))
    }
    return {"type": qualname(module), "attributes": simple, "state": dict(module.state_dict())}


def settings_digest(name: str, settings: Any) -> str:
    """Hash of a strategy's name and settings; checkpoint files by their content."""
    fields = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    if "checkpoints" in fields:
        fields["checkpoints"] = [
            _PathLike(c) if isinstance(c, (str, os.PathLike)) else c for c in fields["checkpoints"]
        ]
    return digest((name, type(settings).__qualname__, fields))


class _PathLike(os.PathLike):
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def __fspath__(self) -> str:
        return self.path


def loader_digest(loader: DataLoader, what: str) -> tuple[str, list[int]]:
    """Hash of every batch of `loader` and the batch sizes, in one pass (on the CPU)."""
    h = hashlib.blake2b(digest_size=16)
    sizes = []
    for inputs, labels in iter_batches(loader, torch.device("cpu"), what):
        for t in (*inputs, labels):
            _feed_tensor(h, t)
        sizes.append(len(labels))
    return h.hexdigest(), sizes


def differing(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """Names of the components whose hashes differ (or exist on one side only)."""
    keys: Iterable[str] = sorted(set(stored) | set(current))
    return [k for k in keys if stored.get(k) != current.get(k)]
