"""Stored scores are never another run's: identity of code and loss, orphaned or foreign
artefacts, damaged metadata, batch sizes, query_rank's seed, read-only media."""

import errno
import functools
import os
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from captum_layerinf import LayerInfluence
from captum_layerinf.influence import CorruptChunkError, ScoreStore, StoreMismatchError, _store

from .._threads import one_torch_thread
from ._worker import build_model

DAMPING = 0.1

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(1)
    model = build_model(nn.ReLU).eval()
    x = torch.rand(22, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 4, (22,))
    return model, (x[:18], y[:18]), (x[18:], y[18:])


def make(model, train, out, **kw):
    kw = {"damping": DAMPING, "batch_size": 6, **kw}
    return LayerInfluence(model, train, output_dir=out, **kw)


def with_activation(model, act):
    """The same weights in the same layout, another activation between the linear layers."""
    other = build_model(act).eval()
    other.load_state_dict(model.state_dict())
    return other


def test_same_weights_with_other_code_are_refused(problem, tmp_path):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    tanh = with_activation(model, nn.Tanh)
    assert tanh.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(StoreMismatchError, match=r"the model's code \(module classes"):
        make(tanh, train, tmp_path).influence(test)
    # A setting that lives outside the weights (LeakyReLU's slope) counts too.
    leaky = [with_activation(model, functools.partial(nn.LeakyReLU, s)) for s in (0.1, 0.2)]
    make(leaky[0], train, tmp_path / "leaky").influence(test)
    with pytest.raises(StoreMismatchError, match="the model's code"):
        make(leaky[1], train, tmp_path / "leaky").influence(test)
    # The true scores of the other code differ: reusing would have been wrong.
    assert not torch.allclose(
        make(tanh, train, None).influence(test), make(model, train, None).influence(test)
    )


@pytest.mark.parametrize(
    "losses",
    [
        (lambda o, y: F.cross_entropy(o, y, reduction="none"),
         lambda o, y: F.cross_entropy(o, y, reduction="none", label_smoothing=0.2)),
        (functools.partial(F.cross_entropy, reduction="none", label_smoothing=0.1),
         functools.partial(F.cross_entropy, reduction="none", label_smoothing=0.3)),
        (nn.CrossEntropyLoss(label_smoothing=0.1), nn.CrossEntropyLoss(label_smoothing=0.3)),
    ],
    ids=["lambdas", "partials", "modules"],
)  # fmt: skip
def test_another_loss_function_is_refused(problem, tmp_path, losses):
    model, train, test = problem
    first = make(model, train, tmp_path, loss_fn=losses[0]).influence(test)
    # The same loss again reads the stored scores.
    assert torch.equal(make(model, train, tmp_path, loss_fn=losses[0]).influence(test), first)
    with pytest.raises(StoreMismatchError, match="the loss differ"):
        make(model, train, tmp_path, loss_fn=losses[1]).influence(test)


def test_a_loss_whose_identity_cannot_be_established_is_refused(problem, tmp_path):
    model, train, test = problem
    opaque = iter([1.0])  # a closure over an object with no content to hash

    def loss(o, y):
        return F.cross_entropy(o, y, reduction="none") * next(opaque, 1.0)

    with pytest.raises(ValueError, match=r"recognise loss_fn.*cannot be established.*module-level"):
        make(model, train, tmp_path, loss_fn=loss).influence(test)
    assert not (tmp_path / "fingerprint.json").exists()
    # Without a store nothing needs recognising.
    make(model, train, None, loss_fn=loss).influence(test)


def test_deleted_metadata_never_lets_another_run_adopt_the_files(problem, tmp_path):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    (tmp_path / "fingerprint.json").unlink()
    # Another damping would restore the old curvature and chunks: refused, naming the files.
    with pytest.raises(
        StoreMismatchError, match=r"curvature-layers.pt, layers-.* but no fingerprint.json"
    ):
        make(model, train, tmp_path, damping=1.0).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    (store.path / "manifest.json").unlink()
    (tmp_path / "curvature-layers.pt").unlink()
    with pytest.raises(StoreMismatchError, match=r"layers-.* but no fingerprint.json"):
        make(model, train, tmp_path, damping=1.0).influence(test)
    # With a fresh identity the score set without manifest is still never adopted.
    shutil.move(store.path, tmp_path / "orphan")
    make(model, train, tmp_path, damping=1.0)  # nothing checked before a call
    (tmp_path / "orphan").rename(store.path)
    (tmp_path / "fingerprint.json").write_text("")
    with pytest.raises(CorruptChunkError, match="fingerprint.json is not valid JSON.*delete"):
        make(model, train, tmp_path).influence(test)


def test_chunks_without_their_manifest_are_never_adopted(problem, tmp_path):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    (store.path / "manifest.json").unlink()
    with pytest.raises(StoreMismatchError, match=r"score chunks \(00000.json.*no manifest.json"):
        make(model, train, tmp_path).influence(test)


def test_foreign_chunks_and_curvature_are_refused(problem, tmp_path):
    model, train, test = problem
    a, b = tmp_path / "a", tmp_path / "b"
    make(model, train, a).influence(test)
    make(model, train, b, damping=1.0).influence(test)
    (sa,), (sb,) = ScoreStore.find(a), ScoreStore.find(b)
    for suffix in (".json", ".npy"):  # chunk 1 of run b copied into run a
        shutil.copy(sb.path / "chunks" / f"00001{suffix}", sa.path / "chunks")
    with pytest.raises(StoreMismatchError, match=r"00001.json was written for .*another run"):
        make(model, train, a).influence(test)
    for suffix in (".json", ".npy"):
        (sa.path / "chunks" / f"00001{suffix}").unlink()
    shutil.copy(b / "curvature-layers.pt", a)
    with pytest.raises(StoreMismatchError, match=r"curvature-layers.pt was not fitted for this"):
        make(model, train, a).influence(test)


@pytest.mark.parametrize("content", ["", "{}", '{"index": 0, "start": 0', "[1, 2]"])
def test_a_damaged_chunk_record_is_named_with_the_fix(problem, tmp_path, content):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    (store.path / "chunks" / "00002.json").write_text(content)
    with pytest.raises(CorruptChunkError, match=r"00002.json (is not valid JSON|lacks).*Delete it"):
        make(model, train, tmp_path).influence(test)


@pytest.mark.parametrize("content", ["", "{}", '{"bounds": [[0, 6]'])
def test_a_damaged_manifest_is_named_with_the_fix(problem, tmp_path, content):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    (store.path / "manifest.json").write_text(content)
    with pytest.raises(CorruptChunkError, match=r"manifest.json (is not valid|lacks).*Delete the"):
        make(model, train, tmp_path).influence(test)


def test_another_batch_size_is_reported_as_such(problem, tmp_path):
    model, train, test = problem
    make(model, train, tmp_path).influence(test)
    with pytest.raises(StoreMismatchError, match=r"batch sizes \(batch_size") as caught:
        make(model, train, tmp_path, batch_size=9).influence(test)
    assert "training data" not in str(caught.value)


def test_query_rank_uses_its_own_seeded_generator(problem, tmp_path):
    model, train, test = problem
    states = []
    for rank in (None, 1):
        torch.manual_seed(123)
        result = make(model, train, None, query_rank=rank).influence(test)
        states.append(torch.get_rng_state())
    first = result
    # The caller's RNG is untouched.
    torch.manual_seed(123)
    assert torch.equal(states[0], torch.get_rng_state())
    assert torch.equal(states[1], torch.get_rng_state())
    torch.manual_seed(7)
    assert torch.equal(make(model, train, None, query_rank=1).influence(test), first)
    # A resumed run's chunks agree with those of the first run.
    make(model, train, tmp_path, query_rank=1).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    for suffix in (".json", ".npy"):
        (store.path / "chunks" / f"00001{suffix}").unlink()
    torch.manual_seed(99)
    assert torch.equal(make(model, train, tmp_path, query_rank=1).influence(test), first)


def test_a_complete_store_on_read_only_media_is_only_read(problem, tmp_path, monkeypatch):
    model, train, test = problem
    expected = make(model, train, tmp_path).influence(test)
    (store,) = ScoreStore.find(tmp_path)
    stale = store.path / "chunks" / ".00001.npy.999999999.tmp"  # a killed writer's leftover
    stale.write_bytes(b"half")
    for path in (tmp_path / ".lock", store.path / ".lock"):
        path.unlink()

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    real_open = os.open

    def open_read_only(path, flags, *args):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            read_only()
        return real_open(path, flags, *args)

    monkeypatch.setattr(Path, "unlink", read_only)
    monkeypatch.setattr(Path, "mkdir", read_only)
    monkeypatch.setattr(_store.os, "open", open_read_only)
    monkeypatch.setattr(_store.os, "replace", read_only)
    assert torch.equal(make(model, train, tmp_path).influence(test), expected)
    assert stale.exists()


def test_another_output_fn_is_refused(problem, tmp_path):
    model, train, test = problem

    class Pair(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            out = self.net(x)
            return out, 2 * out

    pair = Pair(model).eval()
    make(pair, train, tmp_path, output_fn=lambda out: out[0]).influence(test)
    with pytest.raises(StoreMismatchError, match="output_fn"):
        make(pair, train, tmp_path, output_fn=lambda out: out[1]).influence(test)
