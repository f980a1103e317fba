"""`LayerInfluence.check`: agreement with CG per layer, on a random subset."""

import copy

import pytest
import torch

from captum_layerinf import AutoSettings, FidelityReport, LayerInfluence
from captum_layerinf._utils.data import as_dataloader
from captum_layerinf._utils.stats import pearson
from captum_layerinf.influence import _check, _reference, layer_influence
from captum_layerinf.influence._reference import GaussNewtonWoodbury


def test_check_equals_correlations_computed_from_full_scores(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity")
    report = li.check(test.tensors, n_test=4, n_train=30, seed=1, warn_below=-1.0, n_curvature=None)
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
    li = LayerInfluence(model, train)
    report = li.check(test.tensors, n_test=3, n_train=20)
    assert report.references == ["itself"] * len(li.layer_names)  # exact: its own reference
    # Computed: on a ReLU net the Gauss-Newton blocks are the Hessian blocks.
    computed = li.check(test.tensors, n_test=3, n_train=20, reference="gauss-newton")
    assert computed.references == ["gauss-newton"] * len(li.layer_names)
    for r in (report, computed):
        assert torch.all(r.pearson > 1 - 1e-8)
        assert torch.allclose(r.scale, torch.ones_like(r.scale), atol=1e-6)
    assert not [w for w in recwarn if "agrees poorly" in str(w.message)]


def test_check_warns_on_a_poor_layer(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity", damping=1e-2)
    report = li.check(test.tensors, n_test=4, n_train=40, warn_below=1.0)
    assert (report.pearson < 1.0).all()
    with pytest.warns(UserWarning, match="agrees poorly with 'reference'"):
        li.check(test.tensors, n_test=4, n_train=40, warn_below=float(report.pearson.max()))


def test_check_samples_are_seeded(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity", damping=0.1)
    a = li.check(test.tensors, n_test=2, n_train=10, seed=3, warn_below=-1.0)
    b = li.check(test.tensors, n_test=2, n_train=10, seed=3, warn_below=-1.0)
    assert torch.equal(a.train_indices, b.train_indices) and torch.equal(a.pearson, b.pearson)


def test_default_check_compares_on_a_curvature_subset(relu_problem):
    """Default: both sides use the curvature of the same random subset; on a ReLU net the
    reference there is the exact block, so the report equals exact-on-the-subset scores."""
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity")
    report = li.check(test.tensors, n_test=3, n_train=20, seed=2, warn_below=-1.0, n_curvature=40)
    sub = report.curvature_indices
    assert len(sub) == 40 and len(set(sub.tolist())) == 40 and int(sub.max()) < len(train)
    # A subset as large as the training set: the strategy as fitted, on the whole set.
    whole = li.check(test.tensors, n_test=3, n_train=20, warn_below=-1.0, n_curvature=len(train))
    assert torch.equal(whole.curvature_indices, torch.arange(len(train)))
    x, y = train.tensors
    exact = LayerInfluence(model, (x[sub], y[sub]), hessian="exact")
    strategy, ctx = exact._fit("layers", False)
    xt, yt = test.tensors
    i, j = report.test_indices, report.train_indices
    loader = as_dataloader((xt[i], yt[i]), 64, "inputs")
    ref = next(strategy.scores(ctx, loader, lambda desc: [(-1, (x[j],), y[j])]))
    ours = li.influence(test.tensors)[:, i][:, :, j]
    for k in range(len(li.layer_names)):
        assert abs(report.pearson[k] - pearson(ours[k], ref[k])) < 1e-6


@pytest.mark.parametrize(
    "pieces",
    [None, pytest.param(True, marks=pytest.mark.slow), "rows", False, "chunked", "chunked rows"],
)
def test_gauss_newton_woodbury_equals_exact_on_a_relu_net(relu_problem, monkeypatch, pieces):
    """The check's reference for Linear/Conv2d blocks (reverse passes, Woodbury) is the
    exact damped block where the logits are piecewise linear in the layer, whether it
    keeps its rows or their pieces (forced here; None: its own choice per block), with
    the pieces' Gram matrix from their products or from rows formed a slice at a time
    ("rows"), at once or in many small chunks of rows, examples and columns."""
    if pieces is not None:
        monkeypatch.setattr(_reference, "_use_pieces", lambda *_: bool(pieces))
        monkeypatch.setattr(_reference, "products_cheaper", lambda *_: "rows" not in str(pieces))
    if "chunked" in str(pieces):
        monkeypatch.setattr(_reference, "PIECE_CHUNK_ELEMENTS", 2**14)
    model, train, _ = relu_problem
    train = train.tensors[0][:24], train.tensors[1][:24]  # 216 rows of U: a fast forced case
    li = LayerInfluence(model, train, hessian="exact", damping=1e-2)
    exact, ctx = li._fit("layers", False)
    gn = GaussNewtonWoodbury(None, li.damping)
    gn.fit(ctx, exact.blocks)
    gen = torch.Generator().manual_seed(0)
    for b, block in enumerate(exact.blocks):
        v = torch.randn(3, block.numel, generator=gen, dtype=torch.float64)
        want = exact.inverse_hvp(b, v)
        assert torch.allclose(gn.inverse_hvp(b, v), want, rtol=1e-6, atol=1e-8 * want.abs().max())


@pytest.mark.parametrize("pieces", [True, False])
def test_gauss_newton_woodbury_of_a_float32_model_equals_float64(relu_problem, monkeypatch, pieces):
    """A float32 model's reference forms its products with U in float32 (faster): it stays
    the float64 computation to float32 precision, with rows and with pieces."""
    monkeypatch.setattr(_reference, "_use_pieces", lambda *_: pieces)
    model, train, _ = relu_problem
    train = train.tensors[0][:24], train.tensors[1][:24]
    solved = []
    for dtype in (torch.float64, torch.float32):
        m = copy.deepcopy(model).to(dtype)
        li = LayerInfluence(m, (train[0].to(dtype), train[1]), hessian="exact", damping=1e-2)
        exact, ctx = li._fit("layers", False)
        gn = GaussNewtonWoodbury(None, li.damping)
        gn.fit(ctx, exact.blocks)
        gen = torch.Generator().manual_seed(0)
        vs = [torch.randn(3, b.numel, generator=gen, dtype=torch.float64) for b in exact.blocks]
        solved.append([gn.inverse_hvp(b, v) for b, v in enumerate(vs)])
    for want, got in zip(*solved, strict=True):
        assert got.dtype == torch.float64
        assert (got - want).norm() <= 1e-4 * want.norm()


@pytest.mark.parametrize("n_curvature", [None, 64])
def test_exact_layers_are_their_own_reference_and_computing_them_agrees(
    relu_problem, monkeypatch, n_curvature
):
    # "auto" makes the convs exact and the linear EK-FAC. The check fits and scores only
    # the EK-FAC layer; computed anyway, the exact layers agree perfectly.
    model, train, test = relu_problem
    budget = AutoSettings(max_block_bytes=8 * 300**2)
    li = LayerInfluence(model, train, hessian=budget)
    assert [c[0] for c in li.strategies.values()] == ["exact", "exact", "ekfac", "block-diagonal"]
    kw = dict(n_test=3, n_train=20, warn_below=-1.0, n_curvature=n_curvature)
    report = li.check(test.tensors, **kw)
    assert report.strategy == "auto" and report.reference == "reference"
    assert report.references == ["itself", "itself", "gauss-newton"]
    assert 0.5 < report.pearson[2] < 1 - 1e-6
    monkeypatch.setattr(
        layer_influence, "own_reference", lambda s, m, blocks: [False] * len(blocks)
    )
    computed = li.check(test.tensors, **kw)
    assert computed.references[2] == "gauss-newton"
    assert torch.all(computed.pearson[:2] > 1 - 1e-10)
    assert torch.allclose(computed.scale[:2], torch.ones(2, dtype=torch.float64), atol=1e-8)
    assert abs(computed.pearson[2] - report.pearson[2]) < 1e-12


def test_references_fitted_a_group_of_blocks_at_a_time_equal_one_fit(relu_problem, monkeypatch):
    # A deep network's references would not fit in memory at once: `check` fits and scores
    # them per group of blocks. With a 1-byte budget every held block is a group alone.
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian=AutoSettings(max_block_bytes=0))  # all EK-FAC
    whole = li.check(test.tensors, n_test=3, n_train=20, warn_below=-1.0)
    assert whole.references == ["gauss-newton"] * 3
    strategy, ctx = li._fit("layers", False)
    plan = _reference.ReferenceStrategy(li.damping).plan(ctx, strategy.blocks)
    assert [k for k, _ in plan] == ["gauss-newton"] * 3
    monkeypatch.setattr(_reference, "REFERENCE_TOTAL_BYTES", 1)
    assert _reference.plan_groups(plan) == [[0], [1], [2]]
    assert _reference.plan_groups([("exact", 0)] * 3) == [[0, 1, 2]]  # Nothing held.
    monkeypatch.setattr(_check, "plan_groups", lambda plan: [[i] for i in range(len(plan))])
    grouped = li.check(test.tensors, n_test=3, n_train=20, warn_below=-1.0)
    assert torch.allclose(grouped.pearson, whole.pearson, rtol=0, atol=1e-12)
    assert torch.allclose(grouped.scale, whole.scale, rtol=1e-12, atol=0)


def test_check_rejects_a_bad_curvature_subset(relu_problem):
    model, train, test = relu_problem
    for bad in (0, "all", 2.5, True):
        with pytest.raises(ValueError, match="n_curvature must be a positive int or None"):
            LayerInfluence(model, train).check(test.tensors, n_curvature=bad)


def test_paired_scoring_equals_scoring_each_side_alone(relu_problem, monkeypatch):
    # Both sides' test gradients are solved together and scored against one pass of training
    # gradients; test rows arrive a batch at a time (3 and 2 here), each as [ours; theirs].
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian=AutoSettings(max_block_bytes=0), batch_size=3)
    kept = []
    compare = _check._compare
    monkeypatch.setattr(_check, "_compare", lambda *a: kept.append(compare(*a)) or kept[-1])
    monkeypatch.setattr(_check, "plan_groups", lambda plan: [[0], [1, 2]])
    kw = dict(n_test=5, n_train=7, warn_below=-1.0)
    paired = li.check(test.tensors, **kw)
    monkeypatch.setattr(_check, "PAIRED_QUERY_BYTES", 0)  # each side's queries alone
    apart = li.check(test.tensors, **kw)
    alone_kind = type(li._fit("layers", False)[0])
    monkeypatch.setattr(alone_kind, "has_inverse_hvp", classmethod(lambda cls: False))
    alone = li.check(test.tensors, **kw)
    assert torch.equal(paired.pearson, alone.pearson)
    assert torch.equal(paired.pearson, apart.pearson)
    for a, b, c in zip(kept[0][:2], kept[1][:2], kept[2][:2], strict=True):
        assert a.shape == (3, 5, 7)
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)
        assert torch.allclose(a, c, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(kept[0][0], kept[0][1])  # EK-FAC is not its reference
