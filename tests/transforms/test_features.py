"""Feature extractors: the offline default, and VGG with weights that are already local."""

import pytest
import torch
from torchvision.models import VGG16_Weights, VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from captum_layerinf.transforms import (
    RandomFilterCNN,
    VGGFeatures,
    cached_weights_path,
    gram_distance,
    texture_transfer,
)

from ._helpers import image


@pytest.fixture(scope="module")
def vgg16_state():
    """A state dict shaped like torchvision's vgg16 file (features.* keys), seeded weights."""
    torch.manual_seed(1)
    features = make_layers(cfgs["D"])
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def test_random_filter_cnn_is_a_function_of_its_seed():
    a, b, c = RandomFilterCNN(seed=3), RandomFilterCNN(seed=3), RandomFilterCNN(seed=4)
    x = torch.rand(1, 3, 32, 32)
    assert all(torch.equal(a(x)[k], b(x)[k]) for k in a.style_layers if k in a(x))
    assert not torch.equal(a(x)["relu1"], c(x)["relu1"])
    assert set(a(torch.rand(1, 3, 8, 8))) == {"pixels", "relu1", "relu2"}  # 4 x 4 at level 2
    assert set(a(torch.rand(1, 3, 6, 6))) == {"pixels", "relu1"}  # no level below 4 x 4
    assert set(a(x)) >= set(a.content_layers)


def test_vgg_loads_a_state_dict_from_a_path(tmp_path, vgg16_state):
    path = tmp_path / "my_vgg16.pth"
    torch.save(vgg16_state, path)
    vgg = VGGFeatures("vgg16", weights=path)
    assert torch.equal(vgg.layers[0].weight, vgg16_state["features.0.weight"])
    assert torch.equal(vgg.layers[2].weight, vgg16_state["features.2.weight"])
    # a features-only state dict (keys without the prefix) loads the same
    plain = {k.removeprefix("features."): v for k, v in vgg16_state.items()}
    assert torch.equal(VGGFeatures("vgg16", weights=plain).layers[0].weight, vgg.layers[0].weight)


def test_vgg_weights_enum_loads_only_from_the_local_cache(tmp_path, monkeypatch, vgg16_state):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = cached_weights_path(VGG16_Weights.IMAGENET1K_V1)
    assert path.parent == tmp_path / "hub" / "checkpoints"
    with pytest.raises(FileNotFoundError, match="never downloads.*VGGFeatures\\(weights=PATH\\)"):
        VGGFeatures("vgg16", weights=VGG16_Weights.IMAGENET1K_V1)
    assert not path.exists()  # and nothing was fetched
    path.parent.mkdir(parents=True)
    torch.save(vgg16_state, path)
    vgg = VGGFeatures("vgg16", weights=VGG16_Weights.IMAGENET1K_V1)
    assert torch.equal(vgg.layers[0].weight, vgg16_state["features.0.weight"])


def test_vgg_rejects_weights_of_another_architecture(vgg16_state):
    with pytest.raises(ValueError, match="does not fit torchvision's vgg19"):
        VGGFeatures("vgg19", weights=vgg16_state, style_layers=("relu5_4",))


def test_vgg_layer_names_are_checked():
    with pytest.raises(ValueError, match="unknown VGG layer names \\['relu9_1'\\]"):
        VGGFeatures("vgg16", style_layers=("relu9_1",))


def test_vgg_features_drive_the_texture_transfer(vgg16_state):
    vgg = VGGFeatures("vgg16", weights=vgg16_state, style_layers=("relu1_1", "relu2_1"),
                      content_layers=("relu2_2",))  # fmt: skip
    assert len(vgg.layers) == 9  # truncated after the last layer used
    x = image()
    out = texture_transfer(x, "gravel", 1.0, 5, features=vgg)
    assert gram_distance(out, "gravel", features=vgg) < gram_distance(x, "gravel", features=vgg)


def test_vgg19_default_layers_exist():
    vgg = VGGFeatures("vgg19", weights=None)  # random weights, offline
    maps = vgg(torch.rand(1, 3, 32, 32))
    assert set(maps) == {"relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2"}
    assert VGG19_Weights.IMAGENET1K_V1.url.endswith(
        cached_weights_path(VGG19_Weights.IMAGENET1K_V1).name
    )
