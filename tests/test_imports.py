"""Every module of the package imports on its own, in a fresh interpreter: no import cycle.

The layering itself (what may import what) is checked by `lint-imports` in `make lint`,
with the contracts in pyproject.toml.
"""

import pkgutil
import subprocess
import sys

import pytest

import captum_layerinf

# One interpreter imports the third-party packages once, then forks a fresh child per
# module, in which only that module (and what it imports) of captum_layerinf is loaded.
SCRIPT = """
import importlib, os, sys, traceback
import captum, matplotlib, numpy, PIL, scipy, shap, skimage, sklearn, torch, torchvision, tqdm
failed = []
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0 if name in sys.modules else 1)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        failed.append(name)
print("FAILED:", " ".join(failed))
sys.exit(1 if failed else 0)
"""


def _modules() -> list[str]:
    """Every module but `__main__` (importing it runs the command line)."""
    found = pkgutil.walk_packages(captum_layerinf.__path__, prefix="captum_layerinf.")
    names = sorted(m.name for m in found if not m.name.endswith(".__main__"))
    return ["captum_layerinf", *names]


def test_the_module_list_is_complete():
    names = _modules()
    assert "captum_layerinf.influence._blocks" in names
    assert "captum_layerinf.influence.strategies.base" in names
    assert "captum_layerinf.cli" in names


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_module_imports_alone():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, *_modules()],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
