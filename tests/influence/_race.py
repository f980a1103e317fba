"""A process of the concurrency test: claims one output_dir per trial at a shared barrier."""

from __future__ import annotations

from pathlib import Path

import torch

from captum_layerinf import LayerInfluence
from captum_layerinf.influence import StoreMismatchError

from . import _worker


def contend(problem: Path, out: Path, damping: float, trials: int, barrier, results) -> None:
    """Scores into `out/<trial>` with `damping`, starting each trial with the other process.

    Puts `(damping, ["won" | "refused" | "<other error>", ...])` on `results`.
    """
    torch.set_num_threads(1)
    model, train, test = _worker.load_problem(problem)
    outcomes = []
    for trial in range(trials):
        li = LayerInfluence(
            model, train, damping=damping, batch_size=_worker.BATCH, output_dir=out / str(trial)
        )
        barrier.wait(timeout=120)
        try:
            li.influence(test)
            outcomes.append("won")
        except StoreMismatchError:
            outcomes.append("refused")
        except Exception as e:  # reported to the test, which fails naming it
            outcomes.append(f"{type(e).__name__}: {e}")
    results.put((damping, outcomes))
