"""EK-FAC keeps its first pass's pieces for scoring: the same scores, without scoring passes."""

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf.influence import _taps
from captum_layerinf.influence._store import ScoreStore
from captum_layerinf.influence.strategies import EKFACSettings, EKFACStrategy, FitContext
from tests.conftest import rel_err


class Mixed(nn.Module):
    """A grouped conv, a batch-norm (exact fallback), a conv called twice, two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.norm = nn.BatchNorm2d(4)
        self.twice = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4 * 16, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.norm(self.grouped(torch.tanh(self.conv(x)))))
        h = self.twice(torch.relu(self.twice(h)))
        return self.out(torch.tanh(self.fc(h.flatten(1))))


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    model = Mixed().double().eval()
    with torch.no_grad():
        model.norm.running_mean.normal_()
        model.norm.running_var.uniform_(0.5, 2)
    train = (torch.randn(20, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (20,)))
    test = (torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randint(0, 3, (3,)))
    return model, train, test


def _recomputed(monkeypatch):
    """Scoring as without kept pieces: its own forward and backward pass per batch."""
    monkeypatch.setattr(EKFACStrategy, "kept_factors", lambda self, batch: None)


def _scores(li, test):
    return [
        li.influence(test),
        li.compound_influence(test),
        li.influence(test, k=4).influence_scores,
        li.self_influence(),
    ]


@pytest.mark.parametrize("settings", [EKFACSettings(), EKFACSettings(fisher="empirical")])
def test_kept_pieces_give_the_recomputed_scores(problem, monkeypatch, settings):
    model, train, test = problem
    li = LayerInfluence(model, train, hessian=settings, batch_size=8)
    training_forwards, validated = [], []
    original_forward, original_validate = _taps.Taps.forward, FitContext.validate_batch

    def forward(self, inputs):
        if len(inputs[0]) != len(test[0]):
            training_forwards.append(len(inputs[0]))
        return original_forward(self, inputs)

    def validate(self, inputs, labels, what):
        validated.append(what)
        return original_validate(self, inputs, labels, what)

    li._fit("layers", False)
    strategy = li._fitted["layers"][0]
    assert sorted(strategy._kept) == [0, 1, 2]
    assert set(strategy._kept[0]) == {0, 1, 3, 4, 5}  # all but the batch-norm
    monkeypatch.setattr(_taps.Taps, "forward", forward)
    monkeypatch.setattr(FitContext, "validate_batch", validate)
    got = [li.influence(test), li.compound_influence(test), li.influence(test, k=4)]
    assert training_forwards == []  # the training batches are scored from kept pieces
    assert "train_dataset" not in validated
    got = [got[0], got[1], got[2].influence_scores, li.self_influence()]
    monkeypatch.undo()
    _recomputed(monkeypatch)
    want = _scores(LayerInfluence(model, train, hessian=settings, batch_size=8), test)
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) < 1e-10


def test_kept_pieces_with_query_rank_and_a_small_cache(problem, monkeypatch):
    model, train, test = problem
    kept = LayerInfluence(model, train, hessian="ekfac", batch_size=8, query_rank=2)
    got = kept.influence(test)
    # A cache too small for every batch keeps nothing (and runs no extra backward pass).
    small = LayerInfluence(model, train, hessian=EKFACSettings(cache_bytes=20_000), batch_size=8)
    small_scores = small.influence(test)
    assert small._fitted["layers"][0]._kept == {}
    _recomputed(monkeypatch)
    want = LayerInfluence(model, train, hessian="ekfac", batch_size=8, query_rank=2)
    assert rel_err(got, want.influence(test)) < 1e-10
    full = LayerInfluence(model, train, hessian="ekfac", batch_size=8).influence(test)
    assert rel_err(small_scores, full) < 1e-10


def test_kept_pieces_in_the_store_and_on_resume(problem, monkeypatch, tmp_path):
    model, train, test = problem
    li = LayerInfluence(model, train, hessian="ekfac", batch_size=8, output_dir=tmp_path)
    stored = li.influence(test)
    (store,) = ScoreStore.find(tmp_path)
    for suffix in (".json", ".npy"):
        (store.path / "chunks" / f"00001{suffix}").unlink()
    assert store.missing() == [1]
    resumed = LayerInfluence(model, train, hessian="ekfac", batch_size=8, output_dir=tmp_path)
    again = resumed.influence(test)  # refits, scores the missing chunk from kept pieces
    assert resumed._fitted["layers"][0]._kept
    _recomputed(monkeypatch)
    want = LayerInfluence(model, train, hessian="ekfac", batch_size=8).influence(test)
    assert rel_err(stored, want) < 1e-10
    assert rel_err(again, want) < 1e-10


def test_nested_ekfac_keeps_nothing(problem):
    model, train, test = problem
    li = LayerInfluence(model, train, hessian="pcg", batch_size=8)
    li.influence(test)
    assert li._fitted["layers"][0]._ekfac._kept == {}
    glob = LayerInfluence(model, train, hessian="ekfac", batch_size=8)
    glob.global_influence(test)
    assert glob._fitted["<global>"][0]._inner._kept == {}
