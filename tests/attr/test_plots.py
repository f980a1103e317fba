"""The pairing of training-side and test-side layer rankings, and the explanation row."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from captum_layerinf import LayerInfluence  # noqa: E402
from captum_layerinf.attr import (  # noqa: E402
    LayeredExplanation,
    layer_scores_from_influence,
    plot_layer_rankings,
    plot_layered_explanation,
)


def test_layer_scores_from_influence():
    s = torch.tensor([[[1.0, -3.0, 2.0]], [[-0.5, 0.25, 0.0]]])  # [2 layers, 1 test, 3 train]
    torch.testing.assert_close(layer_scores_from_influence(s), torch.tensor([[2.0], [0.25]]))
    torch.testing.assert_close(layer_scores_from_influence(s, "top"), torch.tensor([[2.0], [0.25]]))
    with pytest.raises(ValueError, match="unknown statistic"):
        layer_scores_from_influence(s, "median")
    with pytest.raises(ValueError, match=r"\[n_layers, n_test, n_train\]"):
        layer_scores_from_influence(s[0])


def _marker_ranks(ax):
    """{(x, rank)} of the drawn markers."""
    return {
        (float(x), float(y))
        for coll in ax.collections
        for x, y in coll.get_offsets()  # one marker per collection
    }


def test_plot_layer_rankings_draws_both_rankings():
    train = {"a": 3.0, "b": 1.0, "c": 2.0, "out": 0.5}
    test = {"a": 0.1, "b": 0.3, "c": 0.2}  # reversed order of a, b, c
    fig, ax = plot_layer_rankings(train, test, title="input 0")
    assert ax.figure is fig
    assert _marker_ranks(ax) == {
        (0.0, 1.0), (0.0, 3.0), (0.0, 2.0), (0.0, 4.0),  # train: a, b, c, out
        (1.0, 3.0), (1.0, 1.0), (1.0, 2.0),  # test: a, b, c
    }  # fmt: skip
    assert len(ax.lines) == 3  # "out" has no test-side rank: no line
    assert "Spearman ρ = -1.00 over 3 layers" in ax.get_title()
    plt.close(fig)
    fig, ax0 = plt.subplots()
    _, ax = plot_layer_rankings(train, train, ax=ax0)
    assert ax is ax0 and "ρ = 1.00 over 4" in ax.get_title()
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one layer"):
        plot_layer_rankings({}, test)


def test_pairing_with_layer_influence_and_explanation_row(relu_problem):
    model, train, test = relu_problem
    x, y = test.tensors[0][:2], test.tensors[1][:2]
    li = LayerInfluence(model, train, hessian="identity")
    train_side = layer_scores_from_influence(li.influence((x, y)))  # [3 layers, 2]
    le = LayeredExplanation(model, reference=train.tensors[0])
    res = le.attribute(x, k=2)
    fig, ax = plot_layer_rankings(
        dict(zip(li.layer_names, train_side[:, 0].tolist(), strict=True)),
        dict(zip(res.layer_names, res.layer_statistic[:, 0].tolist(), strict=True)),
    )
    assert len(ax.lines) == len(res.layer_names)  # every test-side layer is on both sides
    plt.close(fig)
    fig, axes = plot_layered_explanation(res, x, index=1)
    assert len(axes) == 2 + 3 and len(axes[0].images) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="k \\+ 3 = 5 Axes"):
        plot_layered_explanation(res, x, axes=[None])
