"""kill -9 in the middle of a run: the rerun finishes it without recomputing finished chunks,
also at random moments (curvature fit, manifests, chunk writes)."""

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from captum_layerinf.influence import ScoreStore

from .._threads import one_torch_thread
from . import _worker
from ._procs import WORKER, env

# As in the worker: the rerun's chunks must be bit-identical to the killed run's.
pytestmark = pytest.mark.slow

_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)
TRIALS = 3


def test_a_killed_run_resumes_to_identical_scores(tmp_path):
    problem, out = tmp_path / "problem.pt", tmp_path / "out"
    _worker.save_problem(problem, n_train=48, n_test=3, act="relu")  # 6 chunks of 8
    log = open(tmp_path / "worker.log", "w")
    cmd = [sys.executable, str(WORKER), str(problem), str(tmp_path / "result.pt")]
    cmd += ["--stored", "exact", "--output-dir", str(out), "--slow", "1.0"]
    proc = subprocess.Popen(cmd, env=env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while len(list(out.glob("exact/*/chunks/*.json"))) < 2:
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no chunk was written in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    (store,) = ScoreStore.find(out / "exact")
    before = {i: r for i, r in enumerate(store.records()) if r is not None}
    assert 2 <= len(before) < store.n_chunks == 6
    stamps = {i: (store.path / "chunks" / r["file"]).stat().st_mtime_ns for i, r in before.items()}

    # What a kill in the middle of a write leaves: a temporary file, never a chunk.
    stale = store.path / "chunks" / f".00005.npy.{proc.pid}.tmp"
    stale.write_bytes(b"\x93NUMPY half")

    model, train, test = _worker.load_problem(problem)
    resumed = _worker.make(model, train, "exact", str(out)).influence(test)
    uninterrupted = _worker.make(model, train, "exact", None).influence(test)
    assert torch.equal(resumed, uninterrupted)

    after = store.records()
    # Finished chunks kept as they were: same records (run, creation time), same files.
    assert all(after[i] == before[i] for i in before)
    assert all(
        (store.path / "chunks" / r["file"]).stat().st_mtime_ns == stamps[i]
        for i, r in before.items()
    )
    assert not stale.exists()
    # The rest computed once, by the rerun, in one run that is not the killed one.
    new = [after[i] for i in range(6) if i not in before]
    assert len({r["run"] for r in new}) == 1
    assert new[0]["run"] not in {r["run"] for r in before.values()}
    assert new[0]["pid"] == os.getpid() and all(r["pid"] == proc.pid for r in before.values())


def _run_slowly(problem, out):
    """A forked process's run: every chunk write followed by a short pause."""
    torch.set_num_threads(1)
    write = ScoreStore.write

    def slow_write(self, *args, **kwargs):
        write(self, *args, **kwargs)
        time.sleep(0.05)

    ScoreStore.write = slow_write
    model, train, test = _worker.load_problem(problem)
    _worker.compute(model, train, test, ["exact"], str(out))


def test_kills_at_random_moments_always_resume_to_identical_scores(tmp_path):
    seed = random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    problem = tmp_path / "problem.pt"
    _worker.save_problem(problem, n_train=40, n_test=3, act="relu")  # 5 chunks of 8
    model, train, test = _worker.load_problem(problem)
    expected = _worker.compute(model, train, test, ["exact"])["exact"]  # also warms torch up
    ctx = multiprocessing.get_context("fork")  # starts with torch imported: kills land in work

    def start(out):
        proc = ctx.Process(target=_run_slowly, args=(problem, out))
        proc.start()
        return proc

    began = time.monotonic()
    full = start(tmp_path / "full")
    full.join(timeout=120)
    assert full.exitcode == 0
    duration = time.monotonic() - began
    for trial in range(TRIALS):
        out = tmp_path / f"trial{trial}"
        delay = rng.uniform(0, duration)
        proc = start(out)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        context = f"seed {seed}, trial {trial}, killed after {delay:.3f} of {duration:.3f} s"
        resumed = _worker.compute(model, train, test, ["exact"], str(out))["exact"]
        for key in ("scores", "global", "top_indices"):
            assert torch.equal(resumed[key], expected[key]), context
        assert not list(out.glob("**/.*.tmp")), context
