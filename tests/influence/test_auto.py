"""`hessian="auto"`: per layer, the sub-strategy it names computes exactly what it would alone."""

import warnings

import pytest
import torch
from torch import nn

from captum_layerinf import AutoSettings, CGSettings, EKFACSettings, LayerInfluence
from captum_layerinf.influence.strategies import AutoStrategy, make_strategy
from captum_layerinf.influence.strategies.auto import AUTO_EKFAC_DENSE_DIM

SMALL = AutoSettings(max_block_bytes=8 * 300**2)  # tiny_cnn: convs exact, the linear EK-FAC


def test_auto_is_the_default_and_exact_where_blocks_fit(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train)
    assert li.hessian == "auto"
    assert {c[0] for c in li.strategies.values()} == {"exact"}
    exact = LayerInfluence(model, train, hessian="exact")
    assert torch.allclose(li.influence(test.tensors), exact.influence(test.tensors))


def test_each_layer_equals_the_strategy_auto_chose(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian=SMALL)
    chosen = li.strategies
    assert [chosen[n][0] for n in li.layer_names] == ["exact", "exact", "ekfac"]
    assert "params" in chosen["6"][1] and "Linear" in chosen["6"][1]
    with pytest.warns(UserWarning, match=r"hessian='auto' for 3 layers: exact x2, ekfac x1"):
        scores = li.influence(test.tensors)
    for name in ("exact", "ekfac"):
        alone = LayerInfluence(model, train, hessian=name).influence(test.tensors)
        rows = [i for i, n in enumerate(li.layer_names) if chosen[n][0] == name]
        assert torch.allclose(scores[rows], alone[rows], rtol=1e-8, atol=1e-12)


def test_global_is_block_diagonal_when_the_full_hessian_does_not_fit(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian=SMALL)
    assert li.strategies["<global>"][0] == "block-diagonal"
    assert "cross-module curvature dropped" in li.strategies["<global>"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layers = li.influence(test.tensors)
        glob = li.global_influence(test.tensors)
    # Every parameter-owning module is a layer here: Eq. 5 block-diagonal = Eq. 7.
    assert torch.allclose(glob, layers.sum(0), rtol=1e-8, atol=1e-12)
    fitted = li._fitted["<global>"][0]
    assert isinstance(fitted, AutoStrategy) and not fitted.strategies  # all blocks reused


def test_global_is_exact_when_the_full_hessian_fits(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train)
    assert li.strategies["<global>"][0] == "exact"
    assert li.strategies["<global>"][1].startswith("dense block 792 params")


class _Scaled(nn.Module):
    """A module whose parameter has no Kronecker structure (an elementwise scale)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n, dtype=torch.float64))

    def forward(self, x):
        return x * self.scale


def test_blocks_without_structure_get_the_generic_solver(relu_problem):
    _, train, test = relu_problem
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), _Scaled(64), nn.Linear(64, 10).double()).eval()
    settings = AutoSettings(
        max_block_bytes=8 * 32**2, generic=("cg",), sub_settings=(CGSettings(tol=1e-10),)
    )
    li = LayerInfluence(model, train, hessian=settings, damping=0.1, layers=["1"])
    assert li.strategies["1"][0] == "cg" and "no Kronecker structure" in li.strategies["1"][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = li.influence(test.tensors)
    want = LayerInfluence(model, train, hessian="exact", damping=0.1, layers=["1"])
    assert torch.allclose(got, want.influence(test.tensors), rtol=1e-6, atol=1e-9)


def test_auto_with_the_score_store_k_and_self_influence(relu_problem, tmp_path):
    model, train, test = relu_problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = LayerInfluence(model, train, hessian=SMALL)
        scores = ref.influence(test.tensors)
        stored = LayerInfluence(model, train, hessian=SMALL, output_dir=tmp_path)
        assert torch.allclose(stored.influence(test.tensors), scores, rtol=1e-8, atol=1e-12)
        assert (tmp_path / "curvature-layers.pt").is_file()
        resumed = LayerInfluence(model, train, hessian=SMALL, output_dir=tmp_path)
        assert torch.equal(resumed.influence(test.tensors), stored.influence(test.tensors))
        top = ref.influence(test.tensors, k=3)
        selfi = ref.self_influence()
    assert torch.equal(top.indices, scores.topk(3, dim=-1).indices)
    assert selfi.shape == (3, len(train))
    x, y = train.tensors
    first = ref.influence((x[:5], y[:5]))
    assert torch.allclose(selfi[:, :5], first[:, range(5), range(5)], rtol=1e-8, atol=1e-12)


def test_restore_refits_the_curvature_from_the_stored_state(relu_problem, tmp_path):
    model, train, test = relu_problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = LayerInfluence(model, train, hessian=SMALL, output_dir=tmp_path)
        scores = first.influence(test.tensors)
        # New test inputs: nothing on disk, the curvature is restored, not refitted.
        again = LayerInfluence(model, train, hessian=SMALL, output_dir=tmp_path)
        x, y = test.tensors
        part = again.influence((x[:2], y[:2]))
    assert torch.allclose(part, scores[:, :2], rtol=1e-8, atol=1e-12)


def test_explicit_strategies_are_reported_and_bad_settings_refused(relu_problem):
    model, train, _ = relu_problem
    li = LayerInfluence(model, train, hessian="ekfac")
    assert set(li.strategies.values()) == {("ekfac", "hessian='ekfac' was given")}
    with pytest.raises(ValueError, match="none of AutoSettings"):
        LayerInfluence(model, train, hessian=AutoSettings(generic=("newton",)))
    with pytest.raises(ValueError, match=r"structured='tracin'\) computes whole scores"):
        LayerInfluence(model, train, hessian=AutoSettings(structured="tracin"))
    with pytest.raises(ValueError, match="generic must be a non-empty tuple"):
        AutoSettings(generic="cg")


def test_show_progress_in_the_constructor_draws_bars(relu_problem, capsys):
    model, train, test = relu_problem
    LayerInfluence(model, train, show_progress=True).influence(test.tensors)
    assert "influence" in capsys.readouterr().err
    LayerInfluence(model, train).influence(test.tensors)
    assert capsys.readouterr().err == ""


def test_auto_decomposes_wide_low_rank_kronecker_factors_from_their_rows():
    """Under "auto", EK-FAC takes factors wider than AUTO_EKFAC_DENSE_DIM from their rows
    (the same eigenbasis, see test_ekfac's memory-bounded test), except where the factors
    are summed across processes as dense matrices, or where the user set EK-FAC's settings."""
    auto = make_strategy("auto", 0.1)
    assert auto._make("ekfac", sharded=False).settings.max_dense_dim == AUTO_EKFAC_DENSE_DIM
    assert auto._make("ekfac", sharded=True).settings == EKFACSettings()
    given = EKFACSettings(fisher="empirical")
    mine = make_strategy(AutoSettings(sub_settings=(given,)), 0.1)
    assert mine._make("ekfac", sharded=False).settings == given


def test_curved_blocks_beyond_the_hvp_budget_get_their_gauss_newton_block(tanh_problem):
    """tanh after both convs (30 and 112 params); the last layer is not curved."""
    model, train, test = tanh_problem
    li = LayerInfluence(model, train, hessian=AutoSettings(max_hvp_params=30))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = li.influence(test.tensors)
        glob = li.global_influence(test.tensors)
    chosen = li.strategies
    assert [chosen[n][0] for n in li.layer_names] == ["exact", "gauss-newton", "exact"]
    assert "curved" in chosen["2"][1] and "max_hvp_params=30" in chosen["2"][1]
    # The full Hessian (792 params) fits but is curved beyond the budget.
    assert chosen["<global>"][0] == "gauss-newton"
    exact = LayerInfluence(model, train, hessian="exact")
    gauss_newton = LayerInfluence(model, train, hessian="gauss-newton")
    want = {
        "exact": exact.influence(test.tensors),
        "gauss-newton": gauss_newton.influence(test.tensors),
    }
    for row, name in enumerate(li.layer_names):
        expected = want[chosen[name][0]][row]
        assert torch.allclose(scores[row], expected, rtol=1e-8, atol=1e-12)
    # On the curved conv, Gauss-Newton is another matrix than the Hessian; not on the last layer.
    assert not torch.allclose(want["exact"][1], want["gauss-newton"][1], rtol=1e-3)
    assert torch.allclose(want["exact"][2], want["gauss-newton"][2], rtol=1e-8, atol=1e-12)
    expected_global = gauss_newton.global_influence(test.tensors)
    assert torch.allclose(glob, expected_global, rtol=1e-8, atol=1e-12)


def test_the_probe_measures_only_curved_blocks_within_the_hvp_budget(tanh_problem, monkeypatch):
    # The autograd graph shows the last layer flat and tanh curving the two convs. With
    # the default budget (0) no block can be built from Hessian-vector products, so
    # nothing is probed: the labels come from the graph. With a budget, the curved blocks
    # within it are probed once, on one example (they are curved there: no second look),
    # and the exact sub-strategy reuses auto's answers.
    from captum_layerinf.influence._gradients import GradientEngine

    model, train, test = tanh_problem
    seen: list[tuple[int, int]] = []
    probe = GradientEngine.curvature_residuals

    def counted(self, inputs, labels, blocks, seed=0):
        seen.append((len(labels), len(blocks)))
        return probe(self, inputs, labels, blocks, seed)

    monkeypatch.setattr(GradientEngine, "curvature_residuals", counted)
    li = LayerInfluence(model, train)
    li.influence(test.tensors)
    assert seen == []
    kinds = [li.strategies[n] for n in li.layer_names]
    assert [k[0] for k in kinds] == ["gauss-newton", "gauss-newton", "exact"]
    assert all("Tanh between it and the logits" in k[1] for k in kinds[:2])
    li = LayerInfluence(model, train, hessian=AutoSettings(max_hvp_params=1000))
    li.influence(test.tensors)
    assert seen == [(1, 2)]
    assert [li.strategies[n][0] for n in li.layer_names] == ["exact", "exact", "exact"]
