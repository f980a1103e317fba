"""LayeredExplanation: the evidence unit ranks first, its projection sits on its pixels,
the restricted DeconvNet equals Captum's on a truncated network, shapes, determinism,
bad input."""

import pytest
import torch
from captum.attr import Deconvolution, InternalInfluence, LayerConductance
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf.attr import LayeredExplanation
from captum_layerinf.attr._selection import gini

from .conftest import EVIDENCE_UNIT, SQUARE

MEASURES = ["mim", "internal_influence", "conductance"]


def explainer(net, ref, measure, **kw):
    reference = ref if measure == "mim" else None
    return LayeredExplanation(net, measure=measure, reference=reference, **kw)


@pytest.mark.parametrize("measure", MEASURES)
def test_evidence_unit_ranks_first_and_projects_onto_its_pixels(evidence, measure):
    # For class-0 inputs the unit is below its ReLU's threshold on the whole path from the
    # zero baseline: every gradient through layer "4" is 0 and the gradient measures rank
    # nothing there (Ho: "ReLU ... filters out pixels contributing negatively").
    net, (ref_x, _), (x, y) = evidence
    res = explainer(net, ref_x, measure).attribute(x, k=3, layer="4")
    explained = y == 1  # class 1: the square is there, the unit fires
    assert (res.top_units[explained, 0] == EVIDENCE_UNIT).all(), res.top_units
    if measure == "mim":  # MIM also ranks it first for class 0 (see the next test)
        assert (res.top_units[:, 0] == EVIDENCE_UNIT).all(), res.top_units
    assert res.best_layer == ["4"] * len(x)
    proj = res.projections[explained, 0, 0]  # [n, 8, 8] image of the evidence unit
    mass = proj.abs()
    inside = mass[:, SQUARE[0], SQUARE[1]].sum((1, 2)) / mass.sum((1, 2))
    assert (inside > 0.9).all(), inside
    # The projection of the evidence unit differs from that of the runner-up unit.
    assert not torch.allclose(res.projections[explained, 0], res.projections[explained, 1])


def test_mim_scores_the_evidence_unit_by_its_class_gap(evidence):
    """For class-1 inputs the evidence unit's MIM score is positive (above the other
    class) and, for class-0 inputs explained as class 0, negative; the layer holding it
    is chosen."""
    net, (ref_x, _), (x, y) = evidence
    scores = explainer(net, ref_x, "mim").unit_influence(x)["4"][:, EVIDENCE_UNIT]
    assert (scores[y == 1] > 0).all() and (scores[y == 0] < 0).all()
    # Unforced, the Gini statistic of |MIM| picks the evidence layer over the conv layer.
    res = explainer(net, ref_x, "mim").attribute(x, k=1)
    assert res.best_layer == ["4"] * len(x), res.layer_statistic
    assert (res.top_units[:, 0] == EVIDENCE_UNIT).all()


@pytest.mark.filterwarnings("ignore:Setting backward hooks:UserWarning")
def test_restricted_deconvolution_equals_captum_on_the_truncated_network(evidence):
    net, (ref_x, _), (x, _) = evidence
    le = LayeredExplanation(net, measure="activation")
    units = torch.tensor([[EVIDENCE_UNIT, 0, 4]]).expand(len(x), 3)
    got = le.project(x, "4", units, seed="one")
    trunk = nn.Sequential(*net[:5])  # conv ... hidden linear: outputs [B, 6]
    for j in range(3):
        want = Deconvolution(trunk).attribute(x.clone().requires_grad_(), target=int(units[0, j]))
        torch.testing.assert_close(got[:, j], want, rtol=1e-12, atol=1e-12)
    # A conv unit: Captum on conv + flatten, the unit's flat index as its target.
    conv_trunk = nn.Sequential(net[0], nn.Flatten())
    unit = 0 * 64 + 2 * 8 + 1  # channel 0, row 2, column 1
    got = le.project(x, "0", torch.full((len(x), 1), unit), seed="one")[:, 0]
    want = Deconvolution(conv_trunk).attribute(x.clone().requires_grad_(), target=unit)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # seed="activation" scales by the raw value where it is positive (DeconvNet is
    # positively homogeneous in its seed).
    acts = trunk(x).detach()[:, EVIDENCE_UNIT]
    pos = acts > 0
    raw = le.project(x, "4", torch.full((len(x), 1), EVIDENCE_UNIT))[:, 0]
    one = le.project(x, "4", torch.full((len(x), 1), EVIDENCE_UNIT), seed="one")[:, 0]
    torch.testing.assert_close(raw[pos], acts[pos, None, None, None] * one[pos])


def test_joint_projection_of_one_unit_is_its_own_projection(evidence):
    net, (ref_x, _), (x, _) = evidence
    res = explainer(net, ref_x, "mim").attribute(x, k=1, layer="4")
    torch.testing.assert_close(res.joint_projection, res.projections[:, 0])


def test_shapes_selection_and_ranking(evidence):
    net, (ref_x, _), (x, _) = evidence
    le = explainer(net, ref_x, "mim")
    res = le.attribute(x, k=4)
    assert le.layer_names == res.layer_names == ["0", "4"]  # default: drops the output layer
    assert res.unit_scores["0"].shape == (6, 3, 8, 8)
    assert res.unit_scores["4"].shape == (6, 6)
    assert res.layer_statistic.shape == (2, 6)
    assert res.top_units.shape == res.top_scores.shape == (6, 4)
    assert res.projections.shape == (6, 4, 1, 8, 8)
    assert res.joint_projection.shape == (6, 1, 8, 8)
    assert torch.equal(res.target, net(x).argmax(1))
    for name, i in zip(res.layer_names, range(2), strict=True):
        torch.testing.assert_close(
            res.layer_statistic[i], gini(res.unit_scores[name].flatten(1).abs())
        )
    for b in range(6):
        ranking = res.layer_ranking(b)
        assert res.best_layer[b] == ranking[0]
        flat = res.unit_scores[res.best_layer[b]][b].flatten()
        assert torch.equal(res.top_scores[b], flat[res.top_units[b]])
        assert (flat[res.top_units[b]].abs().diff() <= 0).all()  # by decreasing |score|
        assert flat.abs().max() == flat[res.top_units[b, 0]].abs()
    coords = res.unit_coordinates(0)
    shape = res.unit_scores[res.best_layer[0]].shape[1:]
    assert len(coords) == 4 and all(len(c) == len(shape) for c in coords)


def test_captum_measures_are_captum_with_the_right_target(evidence):
    net, _, (x, _) = evidence
    target = torch.tensor([0, 1, 1, 0, 1, 0])
    got = LayeredExplanation(net, measure="internal_influence").unit_influence(x, target)
    want = InternalInfluence(net, net[4]).attribute(x, target=target, n_steps=50)
    torch.testing.assert_close(got["4"], want)
    # Conductance is complete: a layer's conductances sum to F(x) - F(0) for the target.
    cond = LayeredExplanation(net, measure="conductance").unit_influence(x, target)
    rows = torch.arange(len(x))
    gap = net(x)[rows, target] - net(torch.zeros_like(x))[rows, target]
    for name in ("0", "4"):
        torch.testing.assert_close(cond[name].flatten(1).sum(1), gap.detach(), rtol=2e-2, atol=2e-2)
    with pytest.raises(AssertionError):  # the wrong class would not sum to that gap
        wrong = LayerConductance(net, net[4]).attribute(x, target=1 - target)
        torch.testing.assert_close(wrong.sum(1), gap.detach(), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("measure", [*MEASURES, "activation"])
def test_deterministic(evidence, measure):
    net, (ref_x, _), (x, _) = evidence
    a = explainer(net, ref_x, measure).attribute(x, k=3)
    b = explainer(net, ref_x, measure).attribute(x, k=3)
    assert a.best_layer == b.best_layer
    for field in ("layer_statistic", "top_units", "top_scores", "projections", "joint_projection"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_reference_labels_given_or_predicted(evidence):
    net, (ref_x, ref_y), (x, _) = evidence
    predicted = explainer(net, ref_x, "mim").unit_influence(x)
    given = LayeredExplanation(net, reference=(ref_x, ref_y)).unit_influence(x)
    torch.testing.assert_close(given["4"], predicted["4"])  # the net classifies ref_x right
    flipped = LayeredExplanation(net, reference=(ref_x, 1 - ref_y)).unit_influence(x)
    assert not torch.allclose(flipped["4"], predicted["4"])


def test_default_layers_match_layer_influence(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity")
    le = LayeredExplanation(model, measure="activation")
    le.attribute(test.tensors[0][:2], k=2)
    assert le.layer_names == li.layer_names[:-1]


def test_training_mode_is_restored_with_a_warning(evidence):
    net, (ref_x, _), (x, _) = evidence
    net.train()
    try:
        with pytest.warns(UserWarning, match="training mode"):
            LayeredExplanation(net, reference=ref_x).attribute(x, k=2)
        assert net.training
    finally:
        net.eval()


def test_bad_input(evidence):
    net, (ref_x, ref_y), (x, _) = evidence
    with pytest.raises(ValueError, match=r"unknown layer 'conv1'\. Valid layer names: '0', '1'"):
        LayeredExplanation(net, layers=["conv1"], reference=ref_x)
    with pytest.raises(TypeError, match="list of names"):
        LayeredExplanation(net, layers="4", reference=ref_x)
    with pytest.raises(ValueError, match="unknown measure 'lrp'"):
        LayeredExplanation(net, measure="lrp")
    with pytest.raises(ValueError, match="unknown statistic"):
        LayeredExplanation(net, reference=ref_x, statistic="entropy")
    with pytest.raises(ValueError, match="needs a labelled reference set"):
        LayeredExplanation(net)
    with pytest.raises(ValueError, match="reference labels must be"):
        LayeredExplanation(net, reference=(ref_x, ref_y[:3]))
    le = LayeredExplanation(net, reference=ref_x)
    with pytest.raises(ValueError, match="exceeds the number of units"):
        le.attribute(x, k=7, layer="4")
    with pytest.raises(ValueError, match="not a candidate layer; candidates: '0', '4'"):
        le.attribute(x, layer="2")
    with pytest.raises(ValueError, match="one class per input"):
        le.attribute(x, target=[0, 1])
    with pytest.raises(ValueError, match="seed must be"):
        le.attribute(x, seed="max")
    with pytest.raises(TypeError, match="batch dimension"):
        le.attribute(x[0, 0, 0])
    with pytest.raises(ValueError, match="unit indices"):
        le.project(x, "4", torch.full((len(x), 1), 6))
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        le.project(x, "nope", torch.zeros(len(x), 1))
