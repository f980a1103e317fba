"""The paper's definitions on hand-made tensors: intra-class argmax, per-class clustering."""

import io

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch

from captum_layerinf import analysis as A
from captum_layerinf.analysis import plots as P

# 2 test images (classes 0 and 1) x 4 training images (classes 0, 0, 1, 1).
SCORES = torch.tensor([[1.0, 2.0, 9.0, 0.0], [5.0, 0.0, 3.0, 4.0]])
TRAIN = torch.tensor([0, 0, 1, 1])
TEST = torch.tensor([0, 1])


def test_intra_class_argmax_differs_from_the_whole_set_argmax():
    whole = SCORES.argmax(-1)
    intra = A.intra_class_top(SCORES, TRAIN, TEST)
    assert whole.tolist() == [2, 0] and intra.tolist() == [1, 3]
    assert A.top_class(SCORES, TRAIN).tolist() == [1, 0]  # another class wins over all
    assert (TRAIN[intra] == TEST).all()


def test_intra_class_top_works_per_layer_and_marks_classes_without_training_images():
    layers = torch.stack([SCORES, -SCORES])
    assert A.intra_class_top(layers, TRAIN, TEST).tolist() == [[1, 3], [0, 2]]
    assert A.intra_class_top(SCORES, TRAIN, torch.tensor([0, 2])).tolist() == [1, -1]


def test_table2_gives_the_intra_class_image_and_the_average_influence_score():
    compound = torch.cat([SCORES, SCORES * 2])  # the same two images in a second variant
    labels, variants = TEST.repeat(2), torch.tensor([0, 0, 1, 1])
    pred = torch.tensor([0, 0, 1, 1])
    t = A.intra_class_table(compound, TRAIN, labels, variants, pred, ["a", "b"], ["o", "s"])
    assert t.column("variant") == ["o", "o", "s", "s"] and t.column("class") == ["a", "b"] * 2
    assert t.column("influential training image") == [1, 3, 1, 3]
    # I_avg: mean over the class's own training images (paper's intra-class I_avg)
    assert t.column("I_avg") == pytest.approx([1.5, 3.5, 3.0, 7.0])
    assert t.column("test images predicted as") == ["a", "a", "b", "b"]
    assert t.column("correct") == [1.0, 0.0, 0.0, 1.0]


def _profiles():
    """Two classes with influence magnitudes 100x apart; in each, o ~ w and t apart."""
    small = torch.tensor([[1.0, 1.0], [1.1, 1.0], [3.0, 0.0]])  # o, w, t of class 0
    big = 100 * torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.0, 1.0]])  # o, w, t of class 1
    per_layer = torch.cat([small, big]).T  # [n_layers=2, n_test=6]
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    variants = torch.tensor([0, 1, 2, 0, 1, 2])
    return per_layer, labels, variants


def test_per_class_clustering_gives_another_tree_than_the_joint_one():
    per_layer, labels, variants = _profiles()
    names = ["o", "w", "t"]
    for c in (0, 1):
        profiles, present = A.class_profiles(per_layer, labels, variants, c, 3)
        assert present == [0, 1, 2]
        merges = A.merge_sets(A.cluster_profiles(profiles), names)
        assert merges[0] == {"o", "w"}  # the paper's finding holds in each class
    joint, joint_names = A.group_profiles(per_layer, labels, variants, ["a", "b"], names)
    merges = A.merge_sets(A.cluster_profiles(joint), joint_names)
    # jointly, all of class a (even its textured group) merges before class b's o and w
    assert merges[1] == {"a | o", "a | w", "a | t"}
    assert {"b | o", "b | w"} not in merges[:2]


def test_within_class_variance_ratio_ignores_differences_between_classes():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    variants = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    noise = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    values = (noise + 1000 * labels)[None]  # variants alike within class, classes apart
    ratio = A.within_class_variance_ratio(values, labels, variants, 2, 2)
    assert ratio.tolist() == [0.0]
    values = (noise + 3 * variants + 1000 * labels)[None]
    # per class: variant means 0.5 and 3.5 (variance 4.5), within-variant variance 0.5
    assert A.within_class_variance_ratio(values, labels, variants, 2, 2).tolist() == [9.0]
    one_each = A.within_class_variance_ratio(values[:, ::2], labels[::2], variants[::2], 2, 2)
    assert one_each.isnan().all()


def test_median_line_is_the_mean_of_the_two_middle_values():
    values = torch.tensor([1.0, 2.0, 4.0, 10.0])
    assert P.middle(values) == 3.0 and float(values.median()) == 2.0


def test_class_names_with_mathtext_are_drawn_literally():
    means = torch.zeros(2, 4, 3)
    names = [r"$\badcmd{x}$", "b"]
    with matplotlib.rc_context({"text.parse_math": False}):
        fig, _ = P.plot_layer_means_per_class(means, names, list("owts"), ["l1", "l2", "l3"])
        fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
    fig, _ = P.plot_layer_means_per_class(means, names, list("owts"), ["l1", "l2", "l3"])
    with pytest.raises(ValueError):  # what the study's figures avoid
        fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
