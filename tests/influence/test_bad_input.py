"""Bad input fails early with an error that names the problem and the fix."""

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_layerinf import ExactSettings, LayerInfluence


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4)).eval()
    x = torch.rand(12, 1, 8, 8)
    y = torch.arange(12) % 4
    return model, x, y


def test_unknown_layer_lists_the_valid_names(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"unknown layer 'conv1'.*Valid layer names: '0', '3'"):
        LayerInfluence(model, (x, y), layers=["conv1"])


def test_layer_without_parameters_is_explained(small):
    model, x, y = small
    with pytest.raises(
        ValueError, match=r"'1' is a ReLU that owns no parameters itself.*Valid layer names"
    ):
        LayerInfluence(model, (x, y), layers=["1"])


def test_layers_as_a_string_is_rejected(small):
    model, x, y = small
    with pytest.raises(TypeError, match=r"list of names, e.g. \['0'\]"):
        LayerInfluence(model, (x, y), layers="0")


def test_float_labels_are_rejected_with_the_fix(small):
    model, x, y = small
    with pytest.raises(TypeError, match=r"integer class indices.*labels.long\(\)"):
        LayerInfluence(model, (x, y.float())).influence((x[:2], y[:2]))


def test_one_hot_labels_are_rejected_with_the_fix(small):
    model, x, y = small
    li = LayerInfluence(model, (x, y))
    onehot = nn.functional.one_hot(y[:2], 4)
    with pytest.raises(ValueError, match=r"shape \[2\].*labels.argmax\(1\)"):
        li.influence((x[:2], onehot))


def test_column_labels_are_rejected_with_the_fix(small):
    # argmax(1) of a [n, 1] column is all zeros: the fix there is a squeeze.
    model, x, y = small
    with pytest.raises(ValueError, match=r"shape \[2\].*labels.squeeze\(1\)"):
        LayerInfluence(model, (x, y)).influence((x[:2], y[:2, None]))


def test_label_count_mismatch_is_rejected(small):
    model, x, y = small
    li = LayerInfluence(model, (x, y))
    with pytest.raises(ValueError, match="same first dimension"):
        li.influence((x[:3], y[:2]))


def test_label_out_of_range_is_rejected(small):
    model, x, y = small
    li = LayerInfluence(model, (x, y))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        li.influence((x[:2], torch.tensor([0, 7])))


def test_input_dtype_different_from_the_model_is_rejected(small):
    model, x, y = small
    with pytest.raises(TypeError, match=r"input 0 is torch.float64 but the model's parameters"):
        LayerInfluence(model, (x, y)).influence((x[:2].double(), y[:2]))


def test_k_larger_than_the_training_set_is_rejected(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"k=20 exceeds the number of training examples \(12\)"):
        LayerInfluence(model, (x, y)).influence((x[:2], y[:2]), k=20)


def test_empty_training_set_is_rejected(small):
    model, x, y = small
    with pytest.raises(ValueError, match="`train_dataset` is empty"):
        LayerInfluence(model, TensorDataset(x[:0], y[:0]))


def test_nan_loss_names_the_examples(small):
    model, x, y = small
    # Finite weights whose products overflow float32: the logits, then the loss, are not finite.
    bad = type(model)(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4)).eval()
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        bad[0].bias.fill_(100.0)
        bad[3].weight.fill_(3e38)
    with pytest.raises(ValueError, match=r"loss is NaN or infinite for 12 example"):
        LayerInfluence(bad, (x, y)).influence((x[:2], y[:2]))


def test_nan_inputs_are_rejected(small):
    model, x, y = small
    xn = x.clone()
    xn[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite values"):
        LayerInfluence(model, (xn, y))


def test_shuffling_dataloader_is_rejected(small):
    model, x, y = small
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        LayerInfluence(model, loader)


def test_unknown_strategy_lists_the_available_ones(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"unknown hessian strategy 'newton'.*'exact'"):
        LayerInfluence(model, (x, y), hessian="newton")


def test_too_large_block_is_refused_naming_scalable_strategies(small):
    model, x, y = small
    li = LayerInfluence(model, (x, y), hessian=ExactSettings(max_block_bytes=100_000))
    with pytest.raises(MemoryError, match=r"'3' has 292 parameters.*'ekfac', 'cg' or 'lissa'"):
        li.influence((x[:2], y[:2]))


def test_loss_returning_a_scalar_is_rejected(small):
    model, x, y = small
    li = LayerInfluence(model, (x, y), loss_fn=lambda out, lab: out.sum())
    with pytest.raises(ValueError, match="one loss per example"):
        li.influence((x[:2], y[:2]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_any_reduction_gives_the_same_scores(small, reduction):
    model, x, y = small
    ref = LayerInfluence(model, (x, y)).influence((x[:3], y[:3]))
    ours = LayerInfluence(model, (x, y), loss_fn=nn.CrossEntropyLoss(reduction=reduction))
    assert torch.allclose(ours.influence((x[:3], y[:3])), ref, rtol=1e-5, atol=1e-7)


def test_training_mode_warns_and_is_restored(small):
    model, x, y = small
    model.train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            li = LayerInfluence(model, (x, y))
        with pytest.warns(UserWarning, match="training mode"):
            li.influence((x[:2], y[:2]))
        assert model.training
    finally:
        model.eval()


def test_frozen_layers_are_skipped_by_default_and_computed_when_named(small):
    model, x, y = small
    model[0].requires_grad_(False)
    try:
        assert LayerInfluence(model, (x, y)).layer_names == ["3"]
        named = LayerInfluence(model, (x, y), layers=["0", "3"])
        scores = named.influence((x[:2], y[:2]))
        assert scores.shape == (2, 2, 12) and scores[0].abs().max() > 0
        assert not any(p.requires_grad for p in model[0].parameters())
        captum = LayerInfluence(model, (x, y), layers=["0"], hessian="captum")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            captum.influence((x[:2], y[:2]))
        # Captum switches requires_grad on for its layers; we switch it back.
        assert not any(p.requires_grad for p in model[0].parameters())
    finally:
        model[0].requires_grad_(True)


def test_state_is_restored_when_an_exception_is_raised(small):
    model, x, y = small
    model.train()
    model[0].requires_grad_(False)
    try:
        li = LayerInfluence(model, (x, y), layers=["0"], hessian="captum")
        with pytest.raises(ValueError):
            li.influence((x[:2], torch.tensor([0, 9])))
        assert model.training
        assert not any(p.requires_grad for p in model[0].parameters())
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    finally:
        model[0].requires_grad_(True)
        model.eval()


# ------------------------------------------------------------------ more bad input


class _PILDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        from PIL import Image

        return Image.new("L", (8, 8)), i % 4


def test_non_tensor_dataset_items_are_rejected_with_the_fix(small):
    model, _, _ = small
    with pytest.raises(TypeError, match=r"`train_dataset`\[0\] holds Image.*ToImage\(\)"):
        LayerInfluence(model, _PILDataset())


def test_test_inputs_shaped_unlike_the_training_inputs_are_explained(small):
    model, x, y = small
    li = LayerInfluence(model, (x, y))
    with pytest.raises(ValueError, match=r"shape \[\(1, 9, 9\)\].*training examples have shape"):
        li.influence((torch.rand(2, 1, 9, 9), y[:2]))


def test_model_output_that_is_not_2d_is_rejected(small):
    model, x, y = small
    three_d = nn.Sequential(model, nn.Unflatten(1, (4, 1))).eval()
    with pytest.raises(ValueError, match=r"logits of shape \[batch, classes\]; got \(12, 4, 1\)"):
        LayerInfluence(three_d, (x, y), layers=["0.0"]).influence((x[:2], y[:2]))


def test_infinite_test_inputs_are_rejected(small):
    model, x, y = small
    xi = x[:2].clone()
    xi[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="`inputs`: input 0 contains NaN or infinite values"):
        LayerInfluence(model, (x, y)).influence((xi, y[:2]))


def test_nan_weights_are_named(small):
    model, x, y = small
    bad = type(model)(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4)).eval()
    bad.load_state_dict(model.state_dict())
    with torch.no_grad():
        bad[3].bias[0] = float("nan")
    with pytest.raises(ValueError, match=r"'3.bias' contains NaN or infinite values.*checkpoint"):
        LayerInfluence(bad, (x, y))


def test_singular_block_with_zero_damping_asks_for_damping(small):
    model, x, y = small
    # 12 examples x 3 non-trivial logit directions < 292 parameters: a singular block.
    li = LayerInfluence(model, (x, y), layers=["3"], damping=0.0)
    with pytest.raises(ValueError, match=r"'3' is singular \(numerical rank \d+ of 292\).*> 0"):
        li.influence((x[:2], y[:2]))


def test_empty_test_set_is_rejected(small):
    model, x, y = small
    with pytest.raises(ValueError, match="`inputs` is empty"):
        LayerInfluence(model, (x, y)).influence((x[:0], y[:0]))


def test_model_spread_over_devices_is_rejected(small):
    model, x, y = small
    split = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 4))
    split[3].to("meta")
    with pytest.raises(ValueError, match=r"several devices \(cpu, meta\).*model.to\(device\)"):
        LayerInfluence(split, (x, y))


@pytest.mark.cuda
def test_data_on_another_device_is_moved_to_the_model(small):
    model, x, y = small
    ref = LayerInfluence(model, (x, y)).influence((x[:2], y[:2]))
    gpu = LayerInfluence(model.cuda(), (x, y)).influence((x[:2], y[:2]))
    model.cpu()
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), ref, rtol=1e-3, atol=1e-5)


def test_training_mode_is_evaluated_in_eval_mode_and_restored():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(72, 4),
    ).double()
    x, y = torch.rand(10, 1, 8, 8, dtype=torch.float64), torch.arange(10) % 4
    model.train()
    model(x)  # running statistics that differ from the batch's
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="training mode; influence is computed in eval mode"):
        trained = LayerInfluence(model, (x, y)).influence((x[:2], y[:2]))
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    expected = LayerInfluence(model.eval(), (x, y)).influence((x[:2], y[:2]))
    assert torch.equal(trained, expected)


@pytest.mark.parametrize("k", [0, -1, 2.5])
def test_k_must_be_a_positive_int(small, k):
    model, x, y = small
    with pytest.raises(ValueError, match="k must be a positive int or None"):
        LayerInfluence(model, (x, y)).influence((x[:2], y[:2]), k=k)


def test_negative_damping_is_rejected(small):
    model, x, y = small
    with pytest.raises(ValueError, match=r"damping must be a number >= 0; got -0.1"):
        LayerInfluence(model, (x, y), damping=-0.1)


@pytest.mark.parametrize("damping", [float("inf"), float("nan")])
def test_infinite_damping_is_rejected_as_such(small, damping):
    model, x, y = small
    with pytest.raises(ValueError, match=r"damping must be a number >= 0; got .*must be finite"):
        LayerInfluence(model, (x, y), damping=damping)


def test_uint8_images_into_a_float_model_ask_for_conversion(small):
    model, x, y = small
    raw = (x * 255).to(torch.uint8)
    with pytest.raises(TypeError, match=r"input 0 is torch.uint8.*x.float\(\) / 255"):
        LayerInfluence(model, (raw, y))
    li = LayerInfluence(model, (x, y))
    with pytest.raises(TypeError, match=r"`inputs`: input 0 is torch.uint8"):
        li.influence((raw[:2], y[:2]))


@pytest.mark.parametrize(
    "sampler",
    [
        lambda: torch.utils.data.SubsetRandomSampler(range(6)),
        lambda: torch.utils.data.WeightedRandomSampler([1.0] * 12, 12),
        lambda: torch.utils.data.RandomSampler(range(12)),
    ],
    ids=["subset", "weighted", "random"],
)
def test_samplers_that_do_not_visit_examples_in_order_are_refused(small, sampler):
    model, x, y = small
    loader = DataLoader(TensorDataset(x, y), batch_size=4, sampler=sampler())
    with pytest.raises(ValueError, match=r"sampler is a \w+Sampler.*wrong examples.*Subset"):
        LayerInfluence(model, loader)


def test_a_subset_in_index_order_is_scored_on_its_own_positions(small):
    model, x, y = small
    indices = [7, 2, 9, 4]
    subset = torch.utils.data.Subset(TensorDataset(x, y), indices)
    ours = LayerInfluence(model, DataLoader(subset, batch_size=3)).influence((x[:2], y[:2]))
    ref = LayerInfluence(model, (x[indices], y[indices])).influence((x[:2], y[:2]))
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-7)


def test_every_submodule_keeps_its_own_mode(small):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten(), nn.Linear(72, 4)
    )
    model.train()
    model[1].eval()  # a frozen batch-norm inside a model in training mode
    _, x, y = small
    with pytest.warns(UserWarning, match="training mode"):
        LayerInfluence(model, (x, y)).influence((x[:2], y[:2]))
    assert [m.training for m in model] == [True, False, True, True, True]
    # A model in eval mode with one submodule in training mode is evaluated in eval mode.
    model.eval()
    model[2].train()
    ref_model = copy.deepcopy(model).eval()
    with pytest.warns(UserWarning, match=r"module\(s\) \['2'\] of the model is in training mode"):
        scores = LayerInfluence(model, (x, y)).influence((x[:2], y[:2]))
    assert model[2].training and not model[0].training
    expected = LayerInfluence(ref_model, (x, y)).influence((x[:2], y[:2]))
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_warn(small, dtype):
    model, x, y = small
    half = copy.deepcopy(model).to(dtype)
    with pytest.warns(UserWarning, match=rf"parameters are {dtype}.*float32 copy"):
        LayerInfluence(half, (x.to(dtype), y))


def test_batch_norm_without_running_statistics_is_refused():
    # It normalises with the batch's statistics in eval mode: examples are not independent.
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    x, y = torch.randn(6, 4), torch.arange(6) % 3
    with pytest.raises(ValueError, match=r"'1' \(BatchNorm1d\) keeps no running statistics"):
        LayerInfluence(model, (x, y))
