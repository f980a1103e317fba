"""The shared figure helpers: detached figures, pictures, and no backend switch at import."""

import io
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from captum_layerinf._utils.plotting import detached_figures, subplots, to_picture
from captum_layerinf.analysis.plots import plot_accuracy

ROOT = Path(__file__).resolve().parents[1]


def _bars():
    return plot_accuracy(torch.rand(3, 2), torch.rand(3, 2) / 10, ["a", "b", "c"], ["x", "y"])


def test_detached_figures_never_reach_pyplot():
    before = plt.get_fignums()
    with detached_figures():
        fig, ax = _bars()
        grid_fig, grid = subplots(2, 3, figsize=(3, 2), squeeze=False, layout="constrained")
    assert plt.get_fignums() == before
    assert type(fig) is Figure and ax.figure is fig and grid.shape == (2, 3)
    assert tuple(grid_fig.get_size_inches()) == (3, 2)
    png = io.BytesIO()
    fig.savefig(png, format="png")
    assert png.getvalue().startswith(b"\x89PNG")
    shown, _ = _bars()  # outside the block: a pyplot figure, as a notebook needs
    assert shown.number in plt.get_fignums()
    plt.close(shown)


def test_to_picture_keeps_unit_range_and_stretches_others():
    gray = torch.tensor([[[0.2, 0.4], [0.6, 0.8]]])
    np.testing.assert_allclose(to_picture(gray), gray[0].double().numpy())
    normalised = torch.tensor([[[-1.0, 1.0], [0.0, 3.0]]]).expand(3, 2, 2)
    picture = to_picture(normalised)
    assert picture.shape == (2, 2, 3)
    np.testing.assert_allclose(picture[..., 0], [[0.0, 0.5], [0.25, 1.0]])
    with pytest.raises(ValueError, match=r"\[1 or 3, H, W\]"):
        to_picture(torch.zeros(2, 4, 4))


@pytest.mark.slow
def test_importing_every_module_leaves_the_matplotlib_backend_alone():
    code = (
        "import importlib, pkgutil, matplotlib, captum_layerinf\n"
        "for m in pkgutil.walk_packages(captum_layerinf.__path__, 'captum_layerinf.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)\n"
        "print(matplotlib.get_backend())\n"
    )
    env = {**os.environ, "MPLBACKEND": "svg", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1].lower() == "svg"
