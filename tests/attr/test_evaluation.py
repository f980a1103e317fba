import pytest
import torch
from captum.attr import Saliency
from torch import nn
from torchvision.ops import masks_to_boxes

from captum_layerinf.attr import (
    PAPER_VGG16_ABLATION,
    RandomAttribution,
    ablate_at_max,
    ablation_drop,
    attribution_heatmap,
    box_masks,
    compare_attributions,
    energy_mask,
    evaluate_attribution,
    format_comparison,
    pointing_game,
)

# One 3 x 3 map: positive energy 5 + 3 + 2 + 0.5 = 10.5 (the -1 carries none).
HEAT = torch.tensor([[[5.0, -1.0, 0.0], [3.0, 0.5, 0.0], [0.0, 2.0, 0.0]]])


@pytest.mark.parametrize(
    ("energy", "kept"),
    [
        (0.1, [(0, 0)]),  # 5 >= 1.05
        (5 / 10.5, [(0, 0)]),  # exactly reached by the first pixel
        (0.5, [(0, 0), (1, 0)]),  # 5 < 5.25, 8 >= 5.25
        (0.8, [(0, 0), (1, 0), (2, 1)]),  # 8 < 8.4, 10 >= 8.4
        (1.0, [(0, 0), (1, 0), (2, 1), (1, 1)]),  # every positive pixel, never the -1
    ],
)
def test_energy_mask_by_hand(energy, kept):
    expected = torch.zeros(1, 3, 3, dtype=torch.bool)
    for r, c in kept:
        expected[0, r, c] = True
    assert torch.equal(energy_mask(HEAT, energy), expected)


def test_energy_mask_of_an_empty_map_keeps_nothing_and_energy_is_checked():
    assert not energy_mask(-torch.ones(2, 4, 4), 0.5).any()
    with pytest.raises(ValueError, match="energy"):
        energy_mask(HEAT, 0.0)


def test_pointing_game_by_hand():
    # The object covers the left column: 5 and 3 lie inside, 2 and 0.5 outside.
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, :, 0] = True
    hits = pointing_game(HEAT, mask, energies=(0.1, 0.5, 0.8, 1.0))
    assert hits.tolist() == [[True], [True], [False], [False]]
    # 0.8 keeps 3 pixels (2 inside: 67 %), 1.0 keeps 4 (2 inside: 50 %)
    half = pointing_game(HEAT, mask, energies=(0.8, 1.0), min_inside=0.6)
    assert half.tolist() == [[True], [False]]
    assert not pointing_game(torch.zeros(1, 3, 3), mask, energies=(0.5,)).any()


def test_pointing_game_batches_images_independently():
    heat = torch.stack([HEAT[0], HEAT[0].flip(1)])
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 0, 2] = True
    hits = pointing_game(heat, masks, energies=(0.1, 0.5))
    assert hits.tolist() == [[True, True], [False, False]]
    with pytest.raises(ValueError, match="same"):
        pointing_game(heat, masks[:1])


def test_box_masks_by_hand_and_as_bounding_box_of_a_mask():
    box = box_masks(torch.tensor([[1, 0, 2, 1]]), 3, 4)  # x1, y1, x2, y2 inclusive
    expected = torch.tensor([[[0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]], dtype=torch.bool)
    assert torch.equal(box, expected)
    ring = torch.zeros(1, 6, 6, dtype=torch.bool)
    ring[0, 1, 2:5] = ring[0, 4, 2:5] = ring[0, 1:5, 2] = True
    bbox = box_masks(masks_to_boxes(ring), 6, 6)
    assert (bbox | ~ring).all() and bbox.sum() == 4 * 3


def test_attribution_heatmap():
    maps = torch.tensor([[[[1.0, -2.0]], [[3.0, 1.0]]]])  # [1, 2 channels, 1, 2]
    assert attribution_heatmap(maps).tolist() == [[[4.0, -1.0]]]
    assert attribution_heatmap(maps, "abs").tolist() == [[[4.0, 3.0]]]
    assert torch.equal(attribution_heatmap(maps[:, 0]), maps[:, 0])
    with pytest.raises(ValueError, match="reduce"):
        attribution_heatmap(maps, "max")


def test_ablate_at_max_by_hand():
    x = torch.arange(2 * 36, dtype=torch.float32).reshape(1, 2, 6, 6)
    heat = torch.zeros(1, 6, 6)
    heat[0, 3, 2] = 1.0  # inside: rows 2..4, cols 1..3
    out = ablate_at_max(x, heat, -1.0, patch_size=3)
    expected = x.clone()
    expected[:, :, 2:5, 1:4] = -1.0
    assert torch.equal(out, expected)
    heat = torch.zeros(1, 6, 6)
    heat[0, 0, 5] = 1.0  # corner: the patch moves inward, rows 0..2, cols 3..5
    baseline = torch.full((2, 6, 6), 7.0)
    expected = x.clone()
    expected[:, :, 0:3, 3:6] = 7.0
    assert torch.equal(ablate_at_max(x, heat, baseline, patch_size=3), expected)


def test_ablation_drop_of_a_linear_model_by_hand():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(2, 1, 4, 4)
    heat = torch.zeros(2, 4, 4)
    heat[0, 1, 1] = heat[1, 3, 0] = 1.0
    targets = torch.tensor([2, 0])
    drops = ablation_drop(model, x, targets, heat, 0.0, patch_size=2)
    w = model[1].weight.reshape(3, 4, 4)
    # patch 2 centred at (1, 1) -> rows 0..1, cols 0..1; at (3, 0) -> rows 2..3, cols 0..1
    by_hand = [
        (w[2, 0:2, 0:2] * x[0, 0, 0:2, 0:2]).sum(),
        (w[0, 2:4, 0:2] * x[1, 0, 2:4, 0:2]).sum(),
    ]
    assert torch.allclose(drops, torch.stack(by_hand), atol=1e-6)


def _problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3))
    x = torch.rand(5, 1, 6, 6)
    masks = torch.zeros(5, 6, 6, dtype=torch.bool)
    masks[:, 1:4, 1:4] = True
    return model, x, torch.tensor([0, 1, 2, 0, 1]), masks


def test_evaluate_attribution_equals_the_parts_and_batches_do_not_matter():
    model, x, targets, masks = _problem()
    saliency = Saliency(model)
    result = evaluate_attribution(saliency, model, x, targets, masks, patch_size=3)
    small = evaluate_attribution(saliency, model, x, targets, masks, patch_size=3, batch_size=2)
    assert torch.equal(result.hits, small.hits)
    assert torch.allclose(result.drops, small.drops)
    heat = attribution_heatmap(saliency.attribute(x, target=targets))
    assert torch.equal(result.hits, pointing_game(heat, masks))
    drops = ablation_drop(model, x, targets, heat, x.mean(0), 3)  # default baseline: mean image
    assert torch.allclose(result.drops, drops)
    assert result.ablation_score == pytest.approx(float(drops.mean()))
    assert torch.equal(result.pointing_accuracy, result.hits.float().mean(1))


def test_a_plain_function_is_a_method_too():
    model, x, targets, masks = _problem()
    inside = masks[:, None].float()  # a map that is the mask itself: every hit
    result = evaluate_attribution(lambda inp, t: inside[: len(inp)], model, x, targets, masks)
    assert result.hits.all()


def test_random_attribution_is_seeded_and_at_chance():
    model, x, targets, masks = _problem()
    a = RandomAttribution(model, seed=3).attribute(x)
    assert torch.equal(a, RandomAttribution(model, seed=3).attribute(x, target=targets))
    assert a.shape == x.shape and not torch.equal(a, RandomAttribution(model, seed=4).attribute(x))
    # 9 of 36 pixels inside: keeping half the energy of a uniform map is never all inside
    result = evaluate_attribution(RandomAttribution(model), model, x, targets, masks)
    assert not result.hits[4:].any()


def test_compare_and_format():
    model, x, targets, masks = _problem()
    methods = {"Random": RandomAttribution(model), "Gradient": Saliency(model)}
    results = compare_attributions(methods, model, x, targets, masks, energies=(0.2, 0.9))
    assert list(results) == ["Random", "Gradient"]
    table = format_comparison(results, "tiny", PAPER_VGG16_ABLATION)
    assert f"{results['Gradient'].ablation_score:.4f}" in table
    assert "| ablation: VGG16 (paper) | 0.0809 | 0.3760 |" in table
    assert "pointing game, 90% energy" in table
