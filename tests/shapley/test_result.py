import math

import pytest
import torch

from captum_layerinf.shapley import BidirectionalResult, _summary


def test_save_load_round_trip(deep_result, tmp_path):
    path = tmp_path / "sub" / "result.pt"
    deep_result.save(path)
    loaded = BidirectionalResult.load(path)  # torch.load(weights_only=True) inside
    for name, value in vars(deep_result).items():
        other = getattr(loaded, name)
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, other) or (value.isnan() == other.isnan()).all(), name
        else:
            assert value == other, name


def test_load_refuses_other_files(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="BidirectionalResult.save"):
        BidirectionalResult.load(tmp_path / "x.pt")


def test_row_and_train_index(deep_result):
    r = deep_result
    assert r.row("compound") == len(r.layer_names) - 1
    with pytest.raises(KeyError, match="unknown row"):
        r.row("nope")
    t = r.train_index(r.proponents[0, :, 0])
    assert torch.equal(r.train_positions[t], r.proponents[0, :, 0])


def test_summaries_of_the_fixture(deep_result):
    r = deep_result
    mass = r.shap_values[:, 0].double().sum(1).clamp(min=0)
    inside = (mass * r.masks).sum((1, 2)) / mass.sum((1, 2))
    assert torch.allclose(r.foreground_share, inside)
    assert ((r.positive_area > 0) & (r.positive_area <= 1)).all()
    top = r.proponent_labels[:-1, :, 0]
    assert torch.equal(r.prediction_agreement, (top == r.predictions).double().mean(0))
    assert (r.layer_agreement >= r.prediction_agreement).all()  # the mode is the most frequent


def test_summary_numbers_on_hand_made_maps():
    maps = torch.zeros(3, 1, 5, 5)
    maps[0, 0, 2, 2] = 1.0  # one pixel
    maps[1] = 1.0  # uniform
    maps[2, 0, 0, 0] = maps[2, 0, 4, 4] = 1.0  # two opposite corners
    maps[2, 0, 1, 1] = -7.0  # negative values do not count
    mass = _summary.positive_mass(maps)
    spread = _summary.positive_spread(mass)
    assert spread[0] == 0 and math.isclose(spread[1], 1.0)
    assert math.isclose(spread[2], (8**0.5) / 2, rel_tol=1e-12)  # sqrt(2·2²+2·2²)/2 / 2
    area = _summary.positive_area(mass)
    assert torch.allclose(area, torch.tensor([1, 20, 2], dtype=torch.float64) / 25)
    masks = torch.zeros(3, 5, 5, dtype=torch.bool)
    masks[:, :, :2] = True
    share = _summary.foreground_share(mass, masks)
    assert torch.allclose(share, torch.tensor([0.0, 0.4, 0.5], dtype=torch.float64))
    assert _summary.foreground_share(mass, None).isnan().all()
    empty = _summary.positive_mass(-maps.abs())
    assert _summary.positive_spread(empty).isnan().all()
    assert _summary.positive_area(empty).isnan().all()
