"""`LayerInfluence.check`: agreement with CG per layer, on a random subset."""

import pytest
import torch

from captum_layerinf import FidelityReport, LayerInfluence
from captum_layerinf.influence._check import pearson


def test_check_equals_correlations_computed_from_full_scores(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity")
    report = li.check(test.tensors, n_test=4, n_train=30, seed=1, warn_below=-1.0)
    assert isinstance(report, FidelityReport)
    i, j = report.test_indices, report.train_indices
    assert len(i) == 4 and len(j) == 30 and len(set(j.tolist())) == 30
    ours = li.influence(test.tensors)[:, i][:, :, j]
    cg = LayerInfluence(model, train, hessian="exact").influence(test.tensors)[:, i][:, :, j]
    for k in range(len(li.layer_names)):
        assert abs(report.pearson[k] - pearson(ours[k], cg[k])) < 1e-6
        slope = float((ours[k] * cg[k]).sum() / (cg[k] ** 2).sum())
        assert abs(report.scale[k] - slope) < 1e-6 * abs(slope)
    assert str(report).count("\n") == len(li.layer_names) + 1


def test_check_of_exact_is_perfect_and_silent(relu_problem, recwarn):
    model, train, test = relu_problem
    report = LayerInfluence(model, train).check(test.tensors, n_test=3, n_train=20)
    assert torch.all(report.pearson > 1 - 1e-8)
    assert torch.allclose(report.scale, torch.ones_like(report.scale), atol=1e-6)
    assert not [w for w in recwarn if "agrees poorly" in str(w.message)]


def test_check_warns_on_a_poor_layer(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity", damping=1e-2)
    report = li.check(test.tensors, n_test=4, n_train=40, warn_below=1.0)
    assert (report.pearson < 1.0).all()
    with pytest.warns(UserWarning, match="agrees poorly with 'cg'"):
        li.check(test.tensors, n_test=4, n_train=40, warn_below=float(report.pearson.max()))


def test_check_samples_are_seeded(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity", damping=0.1)
    a = li.check(test.tensors, n_test=2, n_train=10, seed=3, warn_below=-1.0)
    b = li.check(test.tensors, n_test=2, n_train=10, seed=3, warn_below=-1.0)
    assert torch.equal(a.train_indices, b.train_indices) and torch.equal(a.pearson, b.pearson)
