"""Fingerprints: content hashes of models (weights and code), losses, data and settings."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import types
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .._utils.data import iter_batches

_SIMPLE = (str, int, float, bool, bytes, type(None))


class UnidentifiableError(TypeError):
    """An object's content cannot be hashed, so two runs could not be told apart."""


def digest(obj: Any) -> str:
    """A 32-hex-digit BLAKE2b hash of `obj`'s content.

    Tensors count by their bytes, modules by their weights and code (class, settings,
    `forward`), functions by their code, defaults, closure and the plain values they read,
    `functools.partial` by its function and arguments.

    Raises:
        UnidentifiableError: `obj` holds something whose content cannot be hashed.
    """
    h = hashlib.blake2b(digest_size=16)
    _feed(h, obj, set())
    return h.hexdigest()


def _feed_tensor(h, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().data)


def _feed(h, obj: Any, seen: set[int]) -> None:
    if _feed_value(h, obj):
        return
    if id(obj) in seen:
        h.update(b"<cycle>")
        return
    if not (_feed_container(h, obj, seen) or _feed_code_object(h, obj, seen)):
        raise UnidentifiableError(
            f"cannot fingerprint an object of type {qualname(obj)} (it has no content to hash)"
        )


def _feed_value(h, obj: Any) -> bool:
    """Plain values: tensors, arrays, scalars and strings, files by their content."""
    if isinstance(obj, Tensor):
        _feed_tensor(h, obj)
    elif isinstance(obj, np.ndarray):
        _feed_tensor(h, torch.from_numpy(np.ascontiguousarray(obj)))
    elif isinstance(obj, _SIMPLE) or isinstance(obj, (torch.dtype, torch.device)):
        h.update(f"{type(obj).__name__}:{obj!r}".encode())
    elif isinstance(obj, os.PathLike):
        # A file (e.g. a checkpoint): its content counts, not only its name.
        h.update(b"F")
        with open(obj, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        return False
    return True


def _feed_container(h, obj: Any, seen: set[int]) -> bool:
    """Dicts, sequences, sets and dataclasses: their items, in a canonical order."""
    if isinstance(obj, dict):
        seen.add(id(obj))
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            _feed(h, key, seen)
            _feed(h, obj[key], seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        seen.add(id(obj))
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        h.update(f"L{type(obj).__name__}{len(obj)}".encode())
        for item in items:
            _feed(h, item, seen)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        seen.add(id(obj))
        h.update(type(obj).__qualname__.encode())
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}, seen)
    else:
        return False
    return True


def _feed_code_object(h, obj: Any, seen: set[int]) -> bool:
    """Modules, functions, methods, partials and other objects: their code and state."""
    if isinstance(obj, nn.Module):
        seen.add(id(obj))
        _feed(h, module_state(obj), seen)
        _feed(h, module_code(obj), seen)
    elif isinstance(obj, functools.partial):
        seen.add(id(obj))
        h.update(b"partial")
        _feed(h, (obj.func, obj.args, obj.keywords), seen)
    elif isinstance(obj, types.MethodType):
        seen.add(id(obj))
        _feed(h, (obj.__func__, obj.__self__), seen)
    elif isinstance(obj, types.FunctionType):
        seen.add(id(obj))
        _feed_function(h, obj, seen)
    elif isinstance(obj, (type, types.ModuleType, types.BuiltinFunctionType)) or (
        callable(obj) and type(obj).__module__.split(".")[0] in ("torch", "builtins")
    ):
        # Library code (classes, modules, C functions): fixed by the installed version.
        h.update(f"N{qualname(obj)}".encode())
    elif hasattr(obj, "__dict__"):
        # Another object (e.g. a callable loss class): its type, code and attributes.
        seen.add(id(obj))
        h.update(f"O{qualname(obj)}".encode())
        call = next((vars(c)["__call__"] for c in type(obj).__mro__ if "__call__" in vars(c)), None)
        if isinstance(call, types.FunctionType):
            _feed_code(h, call.__code__)
        _feed(h, vars(obj), seen)
    else:
        return False
    return True


def _feed_code(h, code: types.CodeType) -> None:
    """Bytecode, constants (nested code too) and names; not line numbers or file names."""
    h.update(b"C")
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    h.update(repr(code.co_varnames).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(h, const)
        else:
            h.update(f"{type(const).__name__}:{const!r}".encode())


def _feed_function(h, fn: types.FunctionType, seen: set[int]) -> None:
    """A Python function: its code, defaults, closure and the global values it reads.

    Global functions and classes it calls count by their name and code (one level deep);
    global tensors, numbers and strings by their value. Anything else it holds (a closure
    over an arbitrary object) must itself be hashable, or this raises.
    """
    h.update(f"fn{fn.__module__}.{fn.__qualname__}".encode())
    _feed_code(h, fn.__code__)
    try:
        _feed(h, (fn.__defaults__, fn.__kwdefaults__), seen)
        cells = [c.cell_contents for c in fn.__closure__ or () if _filled(c)]
        _feed(h, cells, seen)
    except UnidentifiableError as e:
        raise UnidentifiableError(f"{fn.__qualname__}: {e}") from None
    for name in _global_names(fn.__code__):
        if name not in fn.__globals__:
            continue
        value = fn.__globals__[name]
        h.update(f"G{name}".encode())
        if isinstance(value, types.FunctionType):
            h.update(f"{value.__module__}.{value.__qualname__}".encode())
            _feed_code(h, value.__code__)
        elif isinstance(value, (*_SIMPLE, Tensor, np.ndarray, tuple, list, dict)):
            try:
                _feed(h, value, seen)
            except UnidentifiableError as e:
                raise UnidentifiableError(f"{fn.__qualname__} reads {name}: {e}") from None
        else:
            h.update(qualname(value).encode())


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018
    except ValueError:
        return False
    return True


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return list(dict.fromkeys(names))


def qualname(obj: Any) -> str:
    """`module.Name` of a function or of an object's type."""
    target = obj if callable(obj) and hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"


def module_state(module: nn.Module) -> dict[str, Any]:
    """A module's type, simple attributes (e.g. `label_smoothing`) and state dict."""
    simple = {
        k: v for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, _SIMPLE)
    }
    return {"type": qualname(module), "attributes": simple, "state": dict(module.state_dict())}


def module_code(model: nn.Module) -> list[Any]:
    """What a model computes besides its weights, per submodule.

    Its class, `extra_repr` (e.g. `kernel_size`, `negative_slope`), simple attributes,
    and the code of its class's `forward` and of its hooks: ReLU and Tanh with the same
    weights differ here.
    """
    out = []
    for name, m in model.named_modules():
        attributes = {
            k: v
            for k, v in vars(m).items()
            if not k.startswith("_") and k != "training" and isinstance(v, _SIMPLE)
        }
        hooks = [
            [_code_digest(f) for f in getattr(m, kind).values()]
            for kind in ("_forward_pre_hooks", "_forward_hooks")
        ]
        forward = getattr(type(m), "forward", None)
        out.append([name, qualname(m), m.extra_repr(), attributes, _code_digest(forward), hooks])
    return out


def _code_digest(fn: Any) -> str:
    code = getattr(fn, "__code__", None) or getattr(getattr(fn, "__func__", None), "__code__", None)
    if code is None:
        return qualname(fn)
    h = hashlib.blake2b(digest_size=16)
    _feed_code(h, code)
    return h.hexdigest()


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
    """Hash of the examples of `loader` and its batch sizes, in one pass (on the CPU).

    The hash is of the examples alone (each batch element position hashed as one stream
    of bytes, its dtype and per-example shape whenever they change), so the same data in
    other batch sizes hashes alike; the sizes are returned apart.
    """
    streams: list[Any] = []
    headers: list[str] = []
    sizes = []
    for inputs, labels in iter_batches(loader, torch.device("cpu"), what):
        parts = (*inputs, labels)
        while len(streams) < len(parts):
            streams.append(hashlib.blake2b(digest_size=16))
            headers.append("")
        for i, t in enumerate(parts):
            t = t.detach().contiguous()
            header = f"T{t.dtype}{tuple(t.shape[1:])}"
            if header != headers[i]:
                streams[i].update(header.encode())
                headers[i] = header
            streams[i].update(t.reshape(-1).view(torch.uint8).numpy().data)
        sizes.append(len(labels))
    total = hashlib.blake2b(digest_size=16)
    for h in streams:
        total.update(h.digest())
    return total.hexdigest(), sizes


def differing(stored: dict[str, str], current: dict[str, str]) -> list[str]:
    """Names of the components whose hashes differ (or exist on one side only)."""
    keys: Iterable[str] = sorted(set(stored) | set(current))
    return [k for k in keys if stored.get(k) != current.get(k)]
