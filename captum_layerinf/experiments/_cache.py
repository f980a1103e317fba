"""Stage results on disk: a rerun of the same configuration and inputs skips finished stages."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ._io import write_atomic
from .config import StudyConfig


class StageCache:
    """Keeps each stage's result as `out_dir/stages/<name>.pt`, written atomically.

    The configuration is saved as `out_dir/config.json`; opening a folder that holds a
    run of a different configuration is an error (results are never mixed). Each stage is
    stored with a key, the content hashes of the inputs it depends on (data files,
    weights): a stage whose key changed (new images or weights at the same path) is
    recomputed, and so are the stages after it.

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

    def _read(self, name: str) -> dict:
        path = self.out_dir / "stages" / name
        return json.loads(path.read_text()) if path.exists() else {}

    def _update(self, name: str, key: str, value) -> None:
        values = self._read(name)
        values[key] = value
        write_atomic(self.out_dir / "stages" / name, json.dumps(values, indent=1))

    def seconds(self) -> dict[str, float]:
        """Wall seconds of each stage when it was computed."""
        return self._read("seconds.json")

    def path(self, name: str) -> Path:
        """Where stage `name` is stored."""
        return self.out_dir / "stages" / f"{name}.pt"

    def done(self, name: str, key: str = "") -> bool:
        """Whether stage `name` has finished, in an earlier or this run, with inputs `key`."""
        return self.path(name).exists() and self._read("keys.json").get(name, "") == key

    def stage(self, name: str, compute: Callable[[], dict], key: str = "") -> dict:
        """The result of stage `name`: read from disk, or computed and saved.

        Args:
            name: The stage.
            compute: Computes the result (a dict of tensors and plain values).
            key: Content hash of the stage's inputs; a stored result with another key is
                recomputed.
        """
        path = self.path(name)
        if self.done(name, key):
            return torch.load(path, weights_only=True)
        start = time.perf_counter()
        result = compute()
        self._update("seconds.json", name, round(time.perf_counter() - start, 2))
        tmp = path.with_suffix(".tmp")
        torch.save(result, tmp)
        os.replace(tmp, path)
        self._update("keys.json", name, key)
        self.ran.append(name)
        return result
