import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from captum_layerinf import LayerInfluence  # noqa: E402
from captum_layerinf.shapley import BidirectionalExplainer, plot_bidirectional  # noqa: E402
from captum_layerinf.shapley.plots import default_rows  # noqa: E402


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in (ax.title, ax._left_title, ax.yaxis.label)]


def test_default_figure(deep_result):
    r = deep_result
    wrong = int((r.predictions != r.labels).nonzero()[0])
    fig, axes = plot_bidirectional(r, wrong)
    rows = default_rows(r.layer_names)
    assert rows[0] == "compound" and rows[1] == r.layer_names[0] and rows[-1] == r.layer_names[-2]
    assert axes.shape == (len(rows), 2 + r.k)
    texts = " ".join(_texts(fig))
    assert "predicted" in texts and "(true)" in texts  # misclassified: both SHAP maps
    assert all(name in texts for name in rows)
    score = r.proponent_scores[r.row("compound"), wrong, 0]
    assert f"{score:+.3g}" in texts
    from shap.plots import colors

    for row in (1, 2):  # the two SHAP maps: shap's colours, one symmetric scale
        image = axes[row, 0].images[-1]
        assert image.cmap.name == colors.red_transparent_blue.name
        assert image.norm.vmax > 0 and image.norm.vmin == -image.norm.vmax
    assert axes[1, 0].images[-1].norm.vmax == axes[2, 0].images[-1].norm.vmax
    assert axes[2, 0].child_axes, "a colour bar under the last SHAP map"
    fig.canvas.draw()
    plt.close(fig)


def test_opponents_train_shap_and_class_names(deep_result):
    r = deep_result
    names = [f"digit {i}" for i in range(10)]
    fig, axes = plot_bidirectional(
        r, 0, layers=["compound"], k=2, opponents=True, train_shap=True, class_names=names
    )
    assert axes.shape == (2, 2 + 2 + 1 + 2)
    texts = " ".join(_texts(fig))
    assert "top-2 opponents" in texts and "SHAP, own class" in texts
    label = int(r.opponent_labels[-1, 0, 0])
    assert f"digit {label}" in texts
    fig.canvas.draw()
    plt.close(fig)


def test_rgb_inputs_render(digits):
    _, _, train, test = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 10)).eval()

    def rgb(data):
        x, y = data[:]
        return (x.expand(-1, 3, -1, -1) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)), y

    result = BidirectionalExplainer(
        model, LayerInfluence(model, rgb(train)), "deep", n_background=8
    ).explain(rgb(test), k=1)
    assert result.shap_values.shape == (5, 2, 3, 8, 8)
    fig, axes = plot_bidirectional(result, 0)
    picture = axes[0, 0].images[0].get_array()
    assert picture.shape == (8, 8, 3)  # drawn as colour
    fig.canvas.draw()
    plt.close(fig)


def test_plot_errors(deep_result):
    with pytest.raises(IndexError):
        plot_bidirectional(deep_result, 99)
    with pytest.raises(ValueError, match=r"k must lie in \[1, 3\]"):
        plot_bidirectional(deep_result, 0, k=4)
    with pytest.raises(KeyError, match="unknown row"):
        plot_bidirectional(deep_result, 0, layers=["features.1"])
    no_train = type(deep_result)(**{**vars(deep_result), "train_shap_values": None})
    with pytest.raises(ValueError, match="explain_train=True"):
        plot_bidirectional(no_train, 0, train_shap=True)
