"""Every module of the package imports on its own, in a fresh interpreter: no import cycle.

The layering itself (what may import what) is checked by `lint-imports` in `make lint`,
with the contracts in pyproject.toml.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One interpreter imports every module once (which loads the third-party packages), forgets
# the package's own modules, then forks a fresh child per module: in it, only that module
# (and what it imports) of captum_layerinf runs, with nothing of the package loaded before.
SCRIPT = """
import importlib, os, sys, traceback
names = sys.argv[1:]
for name in names:
    importlib.import_module(name)
for name in [m for m in sys.modules if m.split(".")[0] == "captum_layerinf"]:
    del sys.modules[name]
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print("FAILED:", " ".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    """Every module but `__main__` (importing it runs the command line)."""
    (root,) = importlib.util.find_spec("captum_layerinf").submodule_search_locations
    names = []  # Found on disk, without importing the package.
    for path in sorted(Path(root).rglob("*.py")):
        parts = path.relative_to(Path(root).parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return sorted(names)


def test_the_module_list_is_complete():
    names = _modules()
    assert "captum_layerinf.influence._blocks" in names
    assert "captum_layerinf.influence.strategies.base" in names
    assert "captum_layerinf.cli" in names


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_alone():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *_modules()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
