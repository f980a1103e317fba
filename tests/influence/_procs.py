"""Starting `_worker.py` in other processes: plain, or under torchrun."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from . import _worker

WORKER = Path(_worker.__file__)
ROOT = WORKER.parents[2]


def torchrun() -> list[str]:
    """The torchrun next to this Python (the same installation), else its module form."""
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def env() -> dict[str, str]:
    """This checkout first on the path, one thread per process (the machine is shared)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
