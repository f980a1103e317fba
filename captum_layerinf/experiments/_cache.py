"""Stage results on disk: a rerun of the same configuration skips finished stages."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import StudyConfig


class StageCache:
    """Keeps each stage's result as `out_dir/stages/<name>.pt`, written atomically.

    The configuration is saved as `out_dir/config.json`; opening a folder that holds a
    run of a different configuration is an error (results are never mixed).

    Args:
        out_dir: The run's folder (created if missing).
        config: The run's configuration.
    """

    def __init__(self, out_dir: str | Path, config: StudyConfig) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "stages").mkdir(exist_ok=True)
        path = self.out_dir / "config.json"
        if path.exists():
            old = StudyConfig.load(path)
            if not old.same_run(config):
                diff = sorted(k for k, v in config.to_dict().items() if old.to_dict().get(k) != v)
                diff = [k for k in diff if k != "show_progress"]
                raise ValueError(
                    f"{self.out_dir} holds a study run with another configuration (differs in "
                    f"{diff}). Use another output folder, or delete this one to start over."
                )
        config.save(path)
        self.ran: list[str] = []

    def _record(self, name: str, seconds: float) -> None:
        path = self.out_dir / "stages" / "seconds.json"
        times = json.loads(path.read_text()) if path.exists() else {}
        times[name] = round(seconds, 2)
        path.write_text(json.dumps(times, indent=1))

    def seconds(self) -> dict[str, float]:
        """Wall seconds of each stage when it was computed."""
        path = self.out_dir / "stages" / "seconds.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def path(self, name: str) -> Path:
        """Where stage `name` is stored."""
        return self.out_dir / "stages" / f"{name}.pt"

    def done(self, name: str) -> bool:
        """Whether stage `name` has finished in an earlier or this run."""
        return self.path(name).exists()

    def stage(self, name: str, compute: Callable[[], dict]) -> dict:
        """The result of stage `name`: read from disk, or computed and saved."""
        path = self.path(name)
        if path.exists():
            return torch.load(path, weights_only=True)
        start = time.perf_counter()
        result = compute()
        self._record(name, time.perf_counter() - start)
        tmp = path.with_suffix(".tmp")
        torch.save(result, tmp)
        os.replace(tmp, path)
        self.ran.append(name)
        return result
