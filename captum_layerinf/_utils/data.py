"""Batches in Captum's convention: a tuple whose last element holds the labels."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sized
from numbers import Number
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    SequentialSampler,
    TensorDataset,
    default_collate,
)


def as_dataloader(data: Any, batch_size: int, what: str) -> DataLoader:
    """Returns a non-shuffling DataLoader over `data`.

    Args:
        data: A Dataset, a DataLoader, or a tuple of tensors whose last element is the labels.
        batch_size: Batch size used when `data` is not already a DataLoader.
        what: Name of the argument, for error messages.

    Returns:
        A DataLoader whose batches are tuples `(*inputs, labels)` in a fixed order. Its
        iterations do not draw from the global torch RNG (a DataLoader without a
        `generator` draws a worker seed from it on every pass): a DataLoader given without
        one is used through a shallow copy with a private generator.
    """
    if isinstance(data, DataLoader):
        _check_order(data, what)
        if data.generator is None:
            data = copy.copy(data)
            data.generator = torch.Generator()
        return data
    if isinstance(data, (tuple, list)):
        if len(data) < 2 or not all(isinstance(t, Tensor) for t in data):
            raise TypeError(
                f"`{what}` as a tuple must hold tensors `(*inputs, labels)`; got "
                f"{[type(t).__name__ for t in data]}."
            )
        if any(t.dim() == 0 for t in data):
            raise ValueError(
                f"`{what}` holds a 0-d tensor (shapes {[tuple(t.shape) for t in data]}); "
                "every element needs the batch as first dimension. For a single example "
                "pass (x.unsqueeze(0), y.unsqueeze(0)), or x[None] and y[None]."
            )
        lengths = {len(t) for t in data}
        if len(lengths) != 1:
            raise ValueError(
                f"`{what}`: inputs and labels must have the same first dimension; got shapes "
                f"{[tuple(t.shape) for t in data]}. A single example needs a batch "
                "dimension too: x.unsqueeze(0)."
            )
        data = TensorDataset(*data)
    if not isinstance(data, Dataset):
        raise TypeError(
            f"`{what}` must be a Dataset, a DataLoader or a tuple `(*inputs, labels)`; "
            f"got {type(data).__name__}."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}.")
    _check_first_item(data, what)
    # An own generator: iterating draws a worker base seed, never from the caller's RNG.
    return DataLoader(data, batch_size=batch_size, shuffle=False, generator=torch.Generator())


def example_count(loader: DataLoader, built: bool) -> int:
    """The number of examples `loader` yields.

    Where `as_dataloader` built it (`built`) on a map-style dataset with a length, whose
    items it checked to be `(*inputs, label)`, that length: one example per index, no
    pass over the data (which may decode every image). Otherwise counted over one pass.
    """
    data = loader.dataset
    if built and isinstance(data, Sized) and not isinstance(data, IterableDataset):
        return len(data)
    return sum(len(batch[-1]) for batch in loader)


def batch_count(loader: DataLoader) -> int | None:
    """The number of batches of `loader`, or None where it cannot tell without a pass.

    An iterable-style dataset without `__len__` has no count; progress bars then count up.
    """
    try:
        return len(loader)
    except TypeError:
        return None


def _check_order(loader: DataLoader, what: str) -> None:
    """Accepts only DataLoaders that visit the dataset in index order, 0, 1, 2, ...

    Scores are indexed by position in the dataset; any other sampler (shuffling, a subset,
    weighted) would put them on the wrong examples.
    """
    if isinstance(loader.dataset, IterableDataset):
        return  # its order is its own: position in the stream
    batches = loader.batch_sampler
    sampler = batches.sampler if isinstance(batches, BatchSampler) else loader.sampler
    if batches is not None and not isinstance(batches, BatchSampler):
        sampler = batches
    if type(sampler) is not SequentialSampler:
        raise ValueError(
            f"`{what}` is a DataLoader whose sampler is a {type(sampler).__name__}, which does "
            "not visit the examples in index order (it shuffles or picks a subset), so scores "
            "would be put on the wrong examples. Pass a DataLoader built with shuffle=False and "
            "no sampler, or the Dataset itself; for a subset, "
            "DataLoader(torch.utils.data.Subset(dataset, indices), shuffle=False): scores then "
            "follow the order of `indices`."
        )


def _check_first_item(data: Dataset, what: str) -> None:
    """Fails early, with the fix, when a map-style dataset's items cannot be batched."""
    try:
        if not isinstance(data, Sized) or len(data) == 0:
            return
        item = data[0]
    except (TypeError, NotImplementedError):
        return  # an iterable-style dataset: its batches are checked as they come
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(
            f"`{what}`[0] is a {type(item).__name__}; each item must be a tuple "
            "`(*inputs, label)` with the label last."
        )
    bad = [type(v).__name__ for v in item if not isinstance(v, (Tensor, np.ndarray, Number))]
    if bad:
        raise TypeError(
            f"`{what}`[0] holds {', '.join(bad)}: every element of an item must be a tensor "
            "(a number is fine for the label). Convert images first, e.g. with "
            "torchvision.transforms.v2.Compose([ToImage(), ToDtype(torch.float32, scale=True)])."
        )


def iter_batches(
    loader: DataLoader, device: torch.device, what: str
) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
    """Yields `(inputs, labels)` per batch, moved to `device`, and fails on an empty loader."""
    seen = False
    for batch in _loader_batches(loader):
        seen = True
        yield split_batch(batch, device, what)
    if not seen:
        raise ValueError(f"`{what}` is empty: it yielded no batch. Pass at least one example.")


def _loader_batches(loader: DataLoader) -> Iterable[Any]:
    """The batches of `loader`: by slicing where it batches a `TensorDataset` in order.

    A DataLoader fetches a `TensorDataset`'s examples one by one and stacks them (a third of
    the CPU time of a small CNN's training epoch); the slices of its tensors, copied, are
    the same batches. Any other loader (sampler, collate function, workers) is iterated.
    """
    data, size = loader.dataset, loader.batch_size
    plain = (
        type(loader) is DataLoader
        and type(data) is TensorDataset
        and size is not None
        and type(loader.sampler) is SequentialSampler
        and loader.collate_fn is default_collate
        and loader.num_workers == 0
        and not loader.pin_memory
    )
    if not plain:
        return loader
    assert isinstance(data, TensorDataset) and size is not None  # as `plain` checked
    tensors, n = data.tensors, len(data)
    stop = n - n % size if loader.drop_last else n
    return (
        [t[lo : lo + size].clone(memory_format=torch.contiguous_format) for t in tensors]
        for lo in range(0, stop, size)
    )


def split_batch(batch: Any, device: torch.device, what: str) -> tuple[tuple[Tensor, ...], Tensor]:
    """Splits a Captum-style batch into model inputs and labels, on `device`."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"each batch of `{what}` must be a tuple `(*inputs, labels)` with the labels last; "
            f"got {type(batch).__name__}."
        )
    *inputs, labels = batch
    if not all(isinstance(t, Tensor) for t in (*inputs, labels)):
        raise TypeError(f"every element of a batch of `{what}` must be a tensor.")
    for i, x in enumerate(inputs):
        if x.dtype == torch.uint8:
            raise TypeError(
                f"`{what}`: input {i} is torch.uint8 (raw pixel values 0-255?); the model needs "
                "floating-point inputs prepared as in training. Convert them, e.g. x.float() / "
                "255 or torchvision.transforms.v2.ToDtype(torch.float32, scale=True)."
            )
    n = labels.shape[0] if labels.dim() > 0 else None
    for i, x in enumerate(inputs):
        if x.dim() == 0 or x.shape[0] != n:
            raise ValueError(
                f"`{what}`: input {i} has shape {tuple(x.shape)} but labels have shape "
                f"{tuple(labels.shape)}; both need the batch size as first dimension."
            )
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise ValueError(
                f"`{what}`: input {i} contains NaN or infinite values; clean the data first."
            )
    return tuple(x.to(device) for x in inputs), labels.to(device)
