"""Offline texture / style images and the plots."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captum_layerinf.transforms import (  # noqa: E402
    available_images,
    brush_strokes,
    load_style,
    mosaic,
    plot_disturbances,
    plot_gram_distance,
    plot_texture_sweep,
    texture_sweep,
    waves,
)

from ._helpers import image  # noqa: E402


@pytest.mark.parametrize("name", available_images())
def test_every_offline_image_loads_in_range(name):
    x = load_style(name)
    assert x.dtype == torch.float32 and x.dim() == 3 and x.shape[0] in (1, 3)
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.05  # a pattern, not a flat image
    x.zero_()
    assert load_style(name).std() > 0.05  # callers get copies, the cache stays intact


@pytest.mark.parametrize("generate", [brush_strokes, mosaic, waves])
def test_generated_styles_are_functions_of_their_seed(generate):
    a, b, c = generate(64, seed=1), generate(64, seed=1), generate(64, seed=2)
    assert a.shape == (3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)


def test_plot_disturbances_returns_fig_ax_and_draws_into_a_given_ax():
    rows = [[image(), image(seed=1)], [image(channels=1), (image() * 255).to(torch.uint8)]]
    fig, ax = plot_disturbances(rows, ["a", "b"], ["x", "y"], height=24)
    assert ax.figure is fig and len(ax.images) == 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x", "y"]
    plt.close(fig)
    fig2, ax2 = plt.subplots()
    assert plot_disturbances(rows, ax=ax2, height=24) == (fig2, ax2)
    plt.close(fig2)


def test_sweep_plots():
    sweep = texture_sweep(image(size=16), "brick", strengths=(0.0, 1.0), steps=(1, 3))
    fig, ax = plot_texture_sweep(sweep, height=16)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0% texture", "100% texture"]
    plt.close(fig)
    fig, ax = plot_gram_distance(sweep)
    assert len(ax.lines) == 2
    plt.close(fig)
