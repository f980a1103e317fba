"""Two processes with different settings race for one output_dir: one wins, one is refused."""

import multiprocessing

import pytest
import torch

from captum_layerinf import LayerInfluence
from captum_layerinf.influence import ScoreStore, StoreMismatchError

from .._threads import one_torch_thread
from . import _race, _worker

pytestmark = pytest.mark.slow

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)

TRIALS = 10
DAMPINGS = (0.01, 1.0)


def test_exactly_one_of_two_racing_runs_wins_each_time(tmp_path):
    problem = tmp_path / "problem.pt"
    _worker.save_problem(problem, n_train=16, n_test=2, act="relu")  # 2 chunks of 8
    model, train, test = _worker.load_problem(problem)

    def make(damping, out=None):
        return LayerInfluence(model, train, damping=damping, batch_size=8, output_dir=out)

    # Computed first, so that the forked processes start with torch's lazy imports done.
    reference = {d: make(d).influence(test) for d in DAMPINGS}
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(len(DAMPINGS)), ctx.Queue()
    procs = [
        ctx.Process(target=_race.contend, args=(problem, tmp_path, d, TRIALS, barrier, results))
        for d in DAMPINGS
    ]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=300) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for trial in range(TRIALS):
        won = [d for d in DAMPINGS if outcomes[d][trial] == "won"]
        assert len(won) == 1, (trial, outcomes)
        (winner,), loser = won, next(d for d in DAMPINGS if d not in won)
        # The folder holds the winner's scores only, each chunk from the winner's one run.
        out = tmp_path / str(trial)
        (store,) = ScoreStore.find(out)
        assert torch.equal(store.read(), reference[winner])
        assert len({r["run"] for r in store.records()}) == 1
        assert torch.equal(make(winner, out).influence(test), reference[winner])
        with pytest.raises(StoreMismatchError, match="the damping"):
            make(loser, out).influence(test)
