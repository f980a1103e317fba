"""Layer aggregations on hand-made score tensors."""

import pytest
import torch

from captum_layerinf.evaluation import aggregate_layers

# Two layers, one test example, four training examples.
LAYERS = torch.tensor([[[4.0, 3.0, 2.0, 1.0]], [[-10.0, 10.0, 20.0, 30.0]]])


def test_sum_is_the_compound_score():
    assert torch.equal(aggregate_layers(LAYERS, "sum"), LAYERS.sum(0))


def test_rank_is_the_mean_within_layer_rank():
    # Ranks (0 = lowest): layer 0 -> 3, 2, 1, 0; layer 1 -> 0, 1, 2, 3; mean 1.5 each.
    out = aggregate_layers(LAYERS, "rank")
    assert torch.allclose(out, torch.zeros(1, 4, dtype=torch.float64))
    # The layer with the larger scale does not dominate, unlike the sum.
    scaled = LAYERS.clone()
    scaled[1] *= 1000
    assert torch.equal(aggregate_layers(scaled, "rank"), out)
    assert aggregate_layers(scaled, "sum").argmax() == 3


def test_rank_ties_share_their_rank():
    scores = torch.tensor([[[1.0, 1.0, 0.0]]])
    assert torch.allclose(
        aggregate_layers(scores, "rank"), torch.tensor([[0.25, 0.25, -0.5]]).double()
    )


def test_vote_counts_each_layers_top_and_bottom():
    scores = torch.tensor(
        [
            [[5.0, 4.0, 0.0, -1.0, -2.0]],
            [[5.0, -3.0, 1.0, 0.0, 2.0]],
            [[9.0, 0.0, 1.0, 2.0, -9.0]],
        ]
    )
    out = aggregate_layers(scores, "vote", top_fraction=0.2)  # one example per side per layer
    # Example 0 is every layer's top proponent; example 4 is the bottom of layers 0 and 2.
    assert torch.equal(out.round(), torch.tensor([[3.0, -1.0, 0.0, 0.0, -2.0]]).double())
    # The Borda tie-break orders equal vote counts and never crosses a vote.
    assert out[0, 2] != out[0, 3]
    assert (out - out.round()).abs().max() < 0.5
    assert out.argsort(descending=True)[0].tolist()[:1] == [0]


def test_bad_input_names_the_fix():
    with pytest.raises(ValueError, match="n_layers, n_test, n_train"):
        aggregate_layers(torch.zeros(3, 4), "sum")
    with pytest.raises(ValueError, match="method must be one of"):
        aggregate_layers(LAYERS, "mean")
    with pytest.raises(ValueError, match="top_fraction"):
        aggregate_layers(LAYERS, "vote", top_fraction=0.9)
