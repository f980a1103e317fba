"""The on-disk score store: resume, read-only reruns, fingerprints, corruption, full disk."""

import errno
import json

import numpy as np
import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf.influence import (
    CorruptChunkError,
    ScoreStore,
    StoreMismatchError,
    _store,
)
from captum_layerinf.influence.strategies import ExactStrategy

from .._threads import one_torch_thread
from ._worker import build_model

DAMPING = 0.1


_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(1)
    model = build_model(nn.ReLU).eval()
    x = torch.rand(30, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (30,))
    return model, (x[:26], y[:26]), (x[26:], y[26:])


def make(model, train, out, **kw):
    return LayerInfluence(model, train, damping=DAMPING, batch_size=6, output_dir=out, **kw)


@pytest.fixture(scope="module")
def reference(problem):
    model, train, test = problem
    return make(model, train, None).influence(test)


def test_scores_on_disk_equal_the_in_memory_ones(problem, reference, tmp_path):
    model, train, test = problem
    li = make(model, train, tmp_path)
    assert torch.equal(li.influence(test), reference)
    (store,) = ScoreStore.find(tmp_path)
    assert store.n_chunks == 5 and store.bounds[-1] == (24, 26)
    assert store.shape == (3, 4, 26) and store.layers == ["0", "4", "6"]
    assert torch.equal(store.read(), reference)
    assert torch.equal(store.chunk(1), reference[..., 6:12])
    args = json.loads((tmp_path / "arguments.json").read_text())
    assert args["hessian"] == "auto" and args["damping"] == DAMPING and args["n_train"] == 26
    # The per-layer choices of "auto", as `li.strategies` gives them after the fit.
    assert args["strategies"] == {n: list(li.strategies[n]) for n in ["0", "4", "6"]}
    # Top-k and compound scores are merged across chunks.
    top = li.influence(test, k=4, proponents=False)
    expected = torch.topk(reference, 4, dim=-1, largest=False)
    assert torch.equal(top.indices, expected.indices)
    assert torch.equal(store.topk(4, proponents=False).indices, expected.indices)
    assert torch.allclose(li.compound_influence(test), reference.sum(0), rtol=1e-12)
    assert torch.equal(store.topk(3, reduce_layers=True).indices, reference.sum(0).topk(3).indices)


def test_a_rerun_computes_only_missing_chunks(problem, reference, tmp_path):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    before = store.records()
    for i in (1, 3):
        (store.path / "chunks" / f"{i:05d}.json").unlink()
        (store.path / "chunks" / f"{i:05d}.npy").unlink()
    assert store.missing() == [1, 3]
    assert torch.equal(make(model, train, tmp_path).influence(test), reference)
    after = store.records()
    assert [after[i] == before[i] for i in range(5)] == [True, False, True, False, True]
    assert after[1]["run"] == after[3]["run"] != before[0]["run"]


def test_a_rerun_with_everything_on_disk_only_reads(problem, reference, tmp_path, monkeypatch):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)

    def no_fit(*args, **kwargs):
        raise AssertionError("a complete store must not fit anything")

    monkeypatch.setattr(LayerInfluence, "_fit", no_fit)
    again = make(model, train, tmp_path)
    assert torch.equal(again.influence(test), reference)
    assert torch.equal(again.influence(test, k=2).indices, reference.topk(2).indices)


def test_other_test_inputs_get_their_own_score_set(problem, tmp_path):
    model, train, test = problem
    li = make(model, train, tmp_path)
    li.influence(test)
    li.influence((test[0][:2], test[1][:2]))
    li.global_influence(test)
    kinds = sorted(s.manifest["kind"] for s in ScoreStore.find(tmp_path))
    assert kinds == ["global", "layers", "layers"]


@pytest.mark.parametrize(
    "change, named",
    [
        ("weights", "the model's weights"),
        ("data", "the training data"),
        ("damping", "the damping"),
        ("strategy", "the hessian strategy"),
    ],
)
def test_another_run_in_the_same_directory_is_refused(problem, tmp_path, change, named):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    kw = {}
    if change == "weights":
        model = build_model(nn.ReLU).eval()
        model.load_state_dict(problem[0].state_dict())
        with torch.no_grad():
            model[0].bias[0] += 1e-6
    elif change == "data":
        train = (train[0].clone(), train[1])
        train[0][5, 0, 0, 0] += 1e-6
    elif change == "damping":
        kw["damping"] = DAMPING * 2
    else:
        kw["hessian"] = "cg"
    li = LayerInfluence(
        model, train, batch_size=6, output_dir=tmp_path, **{"damping": DAMPING, **kw}
    )
    with pytest.raises(StoreMismatchError, match=f"{named}.*another output_dir.*never mixed"):
        li.influence(test)


def test_a_corrupted_chunk_is_an_error_naming_the_fix(problem, tmp_path):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    path = store.path / "chunks" / "00002.npy"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptChunkError, match=r"00002.npy is corrupted.*Delete .*rerun"):
        make(model, train, tmp_path).influence(test)
    path.write_bytes(bytes(data[:100]))
    with pytest.raises(CorruptChunkError, match=r"00002.npy is unreadable"):
        store.chunk(2)


def test_a_full_disk_is_a_clear_error_and_leaves_no_partial_chunk(
    problem, reference, tmp_path, monkeypatch
):
    model, train, test = problem
    calls = {"n": 0}
    real_save = np.save

    def save(f, array):
        calls["n"] += 1
        if calls["n"] == 3:
            f.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(f, array)

    monkeypatch.setattr(_store.np, "save", save)
    with pytest.raises(OSError, match=r"no space left on the device while writing .*00002.npy"):
        make(model, train, tmp_path).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    assert store.missing() == [2, 3, 4]
    assert sorted(p.name for p in (store.path / "chunks").iterdir()) == [
        "00000.json",
        "00000.npy",
        "00001.json",
        "00001.npy",
    ]
    monkeypatch.setattr(_store.np, "save", real_save)
    assert torch.equal(make(model, train, tmp_path).influence(test), reference)


def test_output_dir_that_is_a_file_is_refused(problem, tmp_path):
    model, train, _ = problem
    path = tmp_path / "scores.npy"
    path.write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file; pass a directory"):
        make(model, train, path)


def test_tracin_scores_are_stored_too(problem, tmp_path):
    model, train, test = problem
    checkpoints = [model.state_dict()]
    ref = LayerInfluence(model, train, hessian="tracin", checkpoints=checkpoints).influence(test)
    li = make(model, train, tmp_path, hessian="tracin", checkpoints=checkpoints)
    assert torch.allclose(li.influence(test), ref, rtol=1e-12)
    (store,) = ScoreStore.find(tmp_path)
    assert store.missing() == []


def test_a_resumed_run_restores_the_exact_curvature_instead_of_fitting(
    problem, reference, tmp_path, monkeypatch
):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    assert (tmp_path / "curvature-layers.pt").is_file()
    (store,) = ScoreStore.find(tmp_path)
    for suffix in (".json", ".npy"):
        (store.path / "chunks" / f"00002{suffix}").unlink()

    def no_fit(*args, **kwargs):
        raise AssertionError("the stored curvature must be restored, not refitted")

    monkeypatch.setattr(ExactStrategy, "fit", no_fit)
    assert torch.equal(make(model, train, tmp_path).influence(test), reference)
    assert store.missing() == []
    (tmp_path / "curvature-layers.pt").write_bytes(b"garbage")
    (store.path / "chunks" / "00002.json").unlink()
    with pytest.raises(CorruptChunkError, match=r"curvature-layers.pt is unreadable.*Delete it"):
        make(model, train, tmp_path).influence(test)
