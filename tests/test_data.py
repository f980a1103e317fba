"""Batches of `captum_layerinf._utils.data`: the sliced fast path equals the DataLoader's."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from captum_layerinf._utils.data import as_dataloader, iter_batches


def _tensors():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 11, 2, 4, generator=gen).transpose(0, 1)  # not contiguous
    return x, torch.randn(11, 5, dtype=torch.float64, generator=gen), torch.arange(11)


@pytest.mark.parametrize(
    ("batch_size", "drop_last"), [(1, False), (4, False), (4, True), (11, True), (64, False)]
)
def test_sliced_batches_equal_the_dataloaders(batch_size, drop_last):
    data = TensorDataset(*_tensors())
    loader = DataLoader(data, batch_size=batch_size, drop_last=drop_last)
    want = list(loader)
    got = list(iter_batches(loader, torch.device("cpu"), "train_dataset"))
    assert len(got) == len(want)
    for (inputs, labels), batch in zip(got, want, strict=True):
        for g, w in zip((*inputs, labels), batch, strict=True):
            assert g.dtype == w.dtype and g.is_contiguous() and torch.equal(g, w)


def test_sliced_batches_are_copies():
    x, z, y = _tensors()
    before = x.clone()
    (inputs, labels), *_ = iter_batches(as_dataloader((x, z, y), 4, "t"), torch.device("cpu"), "t")
    inputs[0].zero_()
    labels.zero_()
    assert torch.equal(x, before) and torch.equal(y, torch.arange(11))


def test_other_loaders_are_iterated():
    x, z, y = _tensors()
    calls = []

    def collate(items):
        calls.append(len(items))
        return torch.utils.data.default_collate(items)

    loader = DataLoader(TensorDataset(x, z, y), batch_size=4, collate_fn=collate)
    assert len(list(iter_batches(loader, torch.device("cpu"), "t"))) == 3
    assert calls == [4, 4, 3]
