"""Tables 1 and 3 on hand-made probabilities whose answers are known."""

import pytest
import torch

from captum_layerinf import analysis as A


def test_true_class_in_top_k_is_zero_outside_the_top_k():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.3, 0.1]])
    out = A.true_class_in_top_k(probs, torch.tensor([1, 2]), k=2)
    assert torch.equal(out, torch.tensor([0.3, 0.0]))


def test_sem_is_std_over_sqrt_n():
    assert A.sem(torch.tensor([1.0, 3.0])) == pytest.approx(2**0.5 / 2**0.5)
    assert A.sem(torch.tensor([4.0])) == 0.0


def test_accuracy_table_groups_by_class_and_variant():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    labels = torch.tensor([0, 0, 1, 1])
    variants = torch.tensor([0, 1, 0, 1])
    table = A.accuracy_table(probs, labels, variants, ["orig", "white"], ["a", "b"], k=1)
    rows = {(r[0], r[1]): r for r in table.rows}
    assert rows[("a", "orig")][3:] == [pytest.approx(0.9), 0.0, 1.0, 1.0]
    assert rows[("a", "white")][3:] == [0.0, 0.0, 0.0, 0.0]
    assert rows[("all classes", "white")][5] == 0.5
    assert rows[("all classes", "orig")][3] == pytest.approx((0.9 + 0.7) / 2)


def test_cue_conflict_counts_shape_texture_and_other():
    pred = torch.tensor([0, 1, 2, 1])
    content = torch.tensor([0, 0, 0, 0])
    texture = torch.tensor([1, 1, 1, 1])
    table = A.cue_conflict_table(pred, content, texture, ["a", "b", "c"])
    assert table.rows[-1] == ["all classes", 4, 0.25, 0.5, 0.25]


def test_texture_patch_table_names_the_predicted_class():
    probs = torch.tensor([[0.2, 0.8], [0.1, 0.9]])
    table = A.texture_patch_table(probs, ["a", "b"])
    assert table.column("predicted") == ["b", "b"]
    assert table.column("probability of the texture's class") == pytest.approx([0.2, 0.9])


def test_table_round_trips_and_renders(tmp_path):
    table = A.Table("T", ["x", "y"], [["a<b", 1.5]], "cap")
    table.save(tmp_path / "t.json")
    back = A.Table.load(tmp_path / "t.json")
    assert back == table
    assert "a&lt;b" in back.to_html() and "| a<b | 1.5 |" in back.to_markdown()
    with pytest.raises(ValueError, match="rows"):
        A.Table("T", ["x"], [[1, 2]])


def test_wrong_label_range_is_an_error():
    with pytest.raises(ValueError, match="labels must lie"):
        A.true_class_in_top_k(torch.ones(2, 3) / 3, torch.tensor([0, 3]))
