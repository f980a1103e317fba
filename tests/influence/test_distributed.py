"""`torchrun --nproc_per_node=2` (gloo) gives the scores of one process."""

import subprocess
import warnings

import pytest
import torch

from captum_layerinf import EKFACSettings, LayerInfluence
from captum_layerinf.influence import ScoreStore, _distributed, layer_influence

from .._threads import one_torch_thread
from . import _worker
from ._procs import WORKER, env, torchrun

SHARDED = ["exact", "cg", "pcg", "ekfac", "lissa", "identity"]
STORED = ["exact", "ekfac", "pcg"]


pytestmark = pytest.mark.slow

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_two_processes_give_the_scores_of_one(tmp_path):
    problem, result, out = tmp_path / "problem.pt", tmp_path / "result.pt", tmp_path / "out"
    _worker.save_problem(problem, n_train=28, n_test=3)
    cmd = [*torchrun(), "--standalone", "--nproc_per_node=2", str(WORKER), str(problem)]
    cmd += [str(result), "--hessian", *SHARDED, "--stored", *STORED, "--output-dir", str(out)]
    run = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    got = torch.load(result, weights_only=True)
    model, train, test = _worker.load_problem(problem)
    one = _worker.compute(model, train, test, SHARDED)
    for mode, names in (("memory", SHARDED), ("stored", STORED)):
        for h in names:
            for key, value in one[h].items():
                if key == "top_indices":
                    assert torch.equal(got[mode][h][key], value), (mode, h)
                else:
                    assert rel_err(got[mode][h][key], value) <= 1e-5, (mode, h, key)
    # 28 examples in batches of 8: chunks 0 and 2 by rank 0, 1 and 3 by rank 1.
    store = next(s for s in ScoreStore.find(out / "exact") if s.manifest["kind"] == "layers")
    assert [r["rank"] for r in store.records()] == [0, 1, 0, 1]


class _FakeShard(_distributed.Shard):
    """Rank 0 of 2 without a process group: enough to reach the strategy checks."""

    def broadcast(self, obj):
        return obj

    def barrier(self):
        pass


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"hessian": "tracin", "checkpoints": ["<state>"]}, "'tracin' cannot be split across"),
        ({"hessian": "captum"}, "'captum' cannot be split across processes.*one process"),
        ({"hessian": EKFACSettings(fisher="sampled")}, "fisher='sampled'.*fisher='expected'"),
    ],
)
def test_strategies_that_cannot_be_sharded_are_refused(monkeypatch, kw, match):
    model, train, test = _worker.load_problem_from(_worker.make_problem(12, 2))
    if kw.get("checkpoints"):
        kw = {**kw, "checkpoints": [model.state_dict()]}
    monkeypatch.setattr(layer_influence, "current_shard", lambda device: _FakeShard(0, 2))
    li = LayerInfluence(model, train, batch_size=4, **kw)
    with pytest.raises(ValueError, match=match), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        li.influence(test)


def test_sharding_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("CAPTUM_LAYERINF_SHARD", "0")
    assert _distributed.current_shard(torch.device("cpu")) is None
