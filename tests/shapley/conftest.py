"""A small trained digits CNN, its LayerInfluence and one explanation, shared by the tests."""

import pytest
import torch

from captum_layerinf import LayerInfluence
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.models import DigitsVGG
from captum_layerinf.shapley import BidirectionalExplainer
from captum_layerinf.training import train_classifier

from .._threads import one_torch_thread

_one_thread = pytest.fixture(autouse=True, scope="package")(one_torch_thread)


@pytest.fixture(scope="package")
def digits():
    """DigitsVGG (width 4) trained on 120 digits, its LayerInfluence, 5 test digits (float32)."""
    torch.manual_seed(0)
    train, test = load_digits_split(120, 5, seed=1)
    model = train_classifier(DigitsVGG(width=4, hidden=16), train, epochs=25, lr=1e-2)
    return model, LayerInfluence(model, train), train, test


@pytest.fixture(scope="package")
def background(digits):
    _, _, train, _ = digits
    return train[:16][0]


@pytest.fixture(scope="package")
def deep_result(digits, background):
    """'deep' explanation of the 5 test digits (deterministic), with training SHAP maps."""
    model, li, _, test = digits
    x, y = test[:]
    explainer = BidirectionalExplainer(model, li, "deep", background=background)
    return explainer.explain((x, y), k=3, masks=x[:, 0] > 0.25, explain_train=True)
