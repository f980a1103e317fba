import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf.shapley import BidirectionalExplainer


def test_probability_outputs_are_refused(digits, background):
    model, _, train, test = digits
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    make = BidirectionalExplainer(probs, LayerInfluence(probs, train), background=background)
    with pytest.raises(ValueError, match="probabilities.*logits"):
        make.explain(test[:2], k=1)


def test_outputs_that_are_not_class_logits_are_refused(digits, background):
    model, _, train, test = digits
    spatial = nn.Sequential(model.features).eval()  # feature maps [n, 8, 2, 2]
    li = LayerInfluence(spatial, train)
    with pytest.raises(ValueError, match=r"logits \[batch, n_classes\]; got \(2, 8, 2, 2\)"):
        BidirectionalExplainer(spatial, li, background=background).explain(test[:2], k=1)


def test_label_out_of_range_and_class_names(digits, background):
    model, li, _, test = digits
    x = test[:2][0]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        BidirectionalExplainer(model, li, background=background).explain(
            (x, torch.tensor([0, 10])), k=1
        )
    with pytest.raises(ValueError, match="class_names has 3 names"):
        BidirectionalExplainer(model, li, class_names=["a", "b", "c"]).explain(test[:2], k=1)


def test_argument_errors(digits, background):
    model, li, _, test = digits
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ValueError, match="same\nnetwork|same network"):
        BidirectionalExplainer(other, li)
    with pytest.raises(TypeError, match="must be a LayerInfluence"):
        BidirectionalExplainer(model, object())
    with pytest.raises(ValueError, match="unknown shap_explainer 'kernel'"):
        BidirectionalExplainer(model, li, "kernel")
    with pytest.raises(TypeError, match="shap Explainer instance"):
        BidirectionalExplainer(model, li, object())
    with pytest.raises(ValueError, match="only with shap_explainer='partition'"):
        BidirectionalExplainer(model, li, background="blur(3,3)")
    make = BidirectionalExplainer(model, li, "deep", background=background)
    with pytest.raises(ValueError, match="k must be a positive int"):
        make.explain(test[:2], k=0)
    with pytest.raises(ValueError, match="exceeds the number of training examples"):
        make.explain(test[:2], k=10_000)
    with pytest.raises(ValueError, match=r"masks must have shape \[n, H, W\] = \(2, 8, 8\)"):
        make.explain(test[:2], k=1, masks=torch.ones(2, 1, 8, 8))
