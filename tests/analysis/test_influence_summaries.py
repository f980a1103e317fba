"""I_avg / I_l_avg, intra / inter, top classes and group means on hand-made tensors."""

import pytest
import torch

from captum_layerinf import analysis as A


def test_class_average_is_the_mean_over_each_class():
    scores = torch.tensor([[1.0, 3.0, 5.0, 7.0], [2.0, 2.0, 0.0, -4.0]])
    labels = torch.tensor([0, 0, 1, 2])
    out = A.class_average(scores, labels, 3)
    assert torch.equal(out, torch.tensor([[2.0, 5.0, 7.0], [2.0, 0.0, -4.0]]))


def test_class_average_broadcasts_over_layers_and_matches_a_loop():
    torch.manual_seed(0)
    scores = torch.randn(3, 4, 10, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    out = A.class_average(scores, labels, 3)
    loop = torch.stack([scores[..., labels == c].mean(-1) for c in range(3)], -1)
    assert torch.allclose(out, loop)


def test_intra_inter_picks_own_class_and_averages_the_others():
    avg = torch.tensor([[1.0, 2.0, 6.0], [4.0, 0.0, 2.0]])
    intra, inter = A.intra_inter(avg, torch.tensor([2, 0]))
    assert torch.equal(intra, torch.tensor([6.0, 4.0]))
    assert torch.equal(inter, torch.tensor([1.5, 1.0]))


def test_top_class_is_the_label_of_the_argmax():
    scores = torch.tensor([[0.1, 0.9, 0.3], [5.0, -1.0, 4.0]])
    assert torch.equal(A.top_class(scores, torch.tensor([7, 8, 9])), torch.tensor([8, 7]))


def test_group_mean_and_top_class_table():
    values = torch.tensor([[1.0, 3.0, 10.0, 20.0]])
    assert torch.equal(
        A.group_mean(values, torch.tensor([0, 0, 1, 1]), 2), torch.tensor([[2.0, 15.0]])
    )
    top = torch.tensor([[0, 1, 1, 1]])
    table = A.top_class_table(
        top, ["compound"], torch.tensor([0, 0, 1, 1]), ["a", "b"],
        {"true": torch.tensor([0, 0, 1, 0]), "tex": torch.tensor([1, 1, 0, 1])},
    )  # fmt: skip
    assert table.columns == ["layer", "a: true", "a: tex", "b: true", "b: tex"]
    assert table.rows == [["compound", 0.5, 0.5, 0.5, 0.5]]


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="train_labels must be"):
        A.class_average(torch.zeros(2, 3), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match="test_labels must be"):
        A.intra_inter(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
