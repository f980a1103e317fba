"""`hessian="ekfac"`: its eigenvalues, its inverse, its low-rank factors, its fallback."""

import pytest
import torch
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf._utils.stats import pearson
from captum_layerinf.influence.strategies import EKFACSettings
from captum_layerinf.influence.strategies._kronecker import _row_basis, sandwich
from tests.conftest import rel_err

from ._reference import dense_hessian, layer_names_of


def _fitted(li):
    li.influence(li_inputs(li))
    return li._fitted["layers"][0]


def li_inputs(li):
    x, y = next(iter(li.train_dataloader))
    return (x[:2], y[:2])


def test_corrected_eigenvalues_are_the_hessian_diagonal_in_the_kronecker_basis(relu_problem):
    # On a ReLU/max-pool CNN each layer's Hessian block is its Gauss-Newton block, so
    # "expected" EK-FAC eigenvalues must be exactly diag(Qᵀ H Q) in the basis Q_A ⊗ Q_G
    # when no direction is dropped.
    model, train, _ = relu_problem
    li = LayerInfluence(model, train, hessian=EKFACSettings(class_tol=0.0))
    strategy = _fitted(li)
    xtr, ytr = train.tensors
    for b, layer in enumerate(li.layer_names):
        h = dense_hessian(model, xtr, ytr, layer_names_of(model, layer))
        q_g, q_a = (q[0] for q in strategy._bases[b])  # one group
        basis = torch.einsum("oi,aj->ijoa", q_g, q_a).flatten(0, 1)  # [r_g r_a, d_out, d_in]
        flat = strategy.layers[b].to_flat(basis)
        diag = torch.einsum("kp,pq,kq->k", flat, h, flat).view(q_g.shape[1], q_a.shape[1])
        assert rel_err(strategy.eigenvalue_spectrum(b), diag) < 1e-8, layer


def test_empirical_fisher_is_not_the_hessian_diagonal(relu_problem):
    model, train, test = relu_problem
    expected = LayerInfluence(model, train, hessian="ekfac").influence(test.tensors)
    empirical = LayerInfluence(model, train, hessian=EKFACSettings(fisher="empirical")).influence(
        test.tensors
    )
    assert rel_err(empirical, expected) > 1e-3


def test_ekfac_equals_exact_when_the_hessian_is_kronecker():
    # Logistic regression whose training inputs are all the same vector: the Hessian is
    # (Σ Λ_z) ⊗ a aᵀ, a Kronecker product, which EK-FAC represents exactly (including the
    # null space of the rank-1 input factor, where it must apply 1 / damping).
    torch.manual_seed(0)
    model = nn.Linear(6, 4).double().eval()
    a = torch.randn(1, 6, dtype=torch.float64)
    train = (a.repeat(20, 1), torch.randint(0, 4, (20,)))
    test = (torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 4, (5,)))
    exact = LayerInfluence(model, train).influence(test)
    ekfac = LayerInfluence(model, train, hessian=EKFACSettings(class_tol=0.0)).influence(test)
    assert rel_err(ekfac, exact) < 1e-8


def test_ekfac_is_accurate_at_damping_one(relu_problem):
    model, train, test = relu_problem
    exact = LayerInfluence(model, train, damping=1.0).influence(test.tensors)
    ekfac = LayerInfluence(model, train, damping=1.0, hessian="ekfac").influence(test.tensors)
    for a, b in zip(ekfac, exact, strict=True):
        assert pearson(a, b) >= 0.9


def vgg_shaped(width: int = 4) -> nn.Sequential:
    """VGG's shape at reduced width: conv blocks, a 7x7 adaptive pool, a wide fc6."""
    w = width
    return nn.Sequential(
        nn.Conv2d(3, w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(2 * w, 2 * w, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(7),
        nn.Flatten(),
        nn.Linear(2 * w * 49, 32),  # fc6: d_in = 393 > the 24 training examples
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.ReLU(),
        nn.Linear(32, 5),
    )


def test_memory_bounded_path_equals_the_dense_path_on_a_vgg_shaped_network():
    torch.manual_seed(0)
    model = vgg_shaped().double().eval()
    train = (torch.rand(24, 3, 16, 16, dtype=torch.float64), torch.randint(0, 5, (24,)))
    test = (torch.rand(3, 3, 16, 16, dtype=torch.float64), torch.randint(0, 5, (3,)))
    dense = LayerInfluence(model, train, hessian=EKFACSettings(low_rank_rows=False), batch_size=8)
    ref = dense.influence(test)
    assert _fitted(dense).ranks[3][1] == 393  # fc6's input factor: dense eigh
    # The default keeps the 24 rows of that factor (24 <= 393 / 2): the rows' span, exactly.
    default = LayerInfluence(model, train, hessian="ekfac", batch_size=8)
    assert rel_err(default.influence(test), ref) < 1e-8
    assert _fitted(default).ranks[3][1] <= 24
    # Low-rank input factor of fc6 (its 24 data rows span it), per-example gradients one
    # example at a time, and exact rank queries (rank >= min(d_out, d_in) = 32).
    bounded = LayerInfluence(
        model,
        train,
        hessian=EKFACSettings(max_dense_dim=64, chunk_bytes=1),
        batch_size=8,
        query_rank=32,
    )
    got = bounded.influence(test)
    strategy = bounded._fitted["layers"][0]
    assert strategy.ranks[3][1] <= 24
    assert rel_err(got, ref) < 1e-8
    low = LayerInfluence(
        model, train, hessian=EKFACSettings(max_dense_dim=64), batch_size=8, query_rank=2
    ).influence(test)
    assert all(pearson(a, b) > 0.5 for a, b in zip(low, ref, strict=True))


class WithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 64, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.norm(self.conv(x))).flatten(1))


def test_other_modules_fall_back_to_exact(relu_problem):
    _, train, test = relu_problem
    torch.manual_seed(0)
    model = WithNorm().double().eval()
    exact = LayerInfluence(model, train).influence(test.tensors)
    li = LayerInfluence(model, train, hessian="ekfac")
    ekfac = li.influence(test.tensors)
    assert li._fitted["layers"][0].fallback == {1: 0}
    assert rel_err(ekfac[1], exact[1]) < 1e-10
    with pytest.raises(ValueError, match=r"'norm' \(BatchNorm2d, 6 parameters\).*layers="):
        LayerInfluence(model, train, hessian=EKFACSettings(fallback_max_params=2)).influence(
            test.tensors
        )


def test_bad_settings_are_rejected(relu_problem):
    model, train, test = relu_problem
    with pytest.raises(ValueError, match="fisher must be one of"):
        EKFACSettings(fisher="true")
    with pytest.raises(ValueError, match="cross-entropy"):
        LayerInfluence(
            model,
            train,
            loss_fn=lambda out, y: (out.sum(1) - y) ** 2,
            hessian=EKFACSettings(fisher="sampled"),
        ).influence(test.tensors)


def test_second_pass_recomputed_equals_second_pass_cached(relu_problem):
    model, train, test = relu_problem
    cached = LayerInfluence(model, train, hessian="ekfac").influence(test.tensors)
    recomputed = LayerInfluence(model, train, hessian=EKFACSettings(cache_bytes=0)).influence(
        test.tensors
    )
    assert rel_err(recomputed, cached) < 1e-12


@pytest.mark.parametrize("cache_bytes", [0, 3_000, 30_000, 300_000])
def test_a_cache_filled_part_way_gives_the_same_scores(relu_problem, cache_bytes):
    # The budget runs out before, inside and after a batch's directions.
    model, train, test = relu_problem
    exact = EKFACSettings(class_tol=0.0)
    full = LayerInfluence(model, train, hessian=exact).influence(test.tensors)
    small = EKFACSettings(class_tol=0.0, cache_bytes=cache_bytes)
    assert (
        rel_err(LayerInfluence(model, train, hessian=small).influence(test.tensors), full) < 1e-12
    )


@pytest.mark.parametrize("cache_bytes", [0, 2**30])
def test_beyond_the_cache_one_direction_is_held_at_a_time(relu_problem, monkeypatch, cache_bytes):
    # "Y": a direction's output gradients are formed; "A": a factor sums something. Within
    # the cache a batch's directions are formed together ("YY"); beyond it each is summed
    # into G before the next is formed.
    from captum_layerinf.influence.strategies import _kronecker, ekfac

    events, first_pass = [], [True]
    directions = ekfac.EKFACStrategy._direction_grads
    add = _kronecker.KroneckerFactor.add
    bases = ekfac.EKFACStrategy._eigenbases

    def logged_directions(self, *args):
        for part in directions(self, *args):
            events.append("Y" if first_pass[0] else "")
            yield part

    def logged_add(self, x):
        events.append("A" if first_pass[0] else "")
        add(self, x)

    def logged_bases(self, *args):
        first_pass[0] = False
        return bases(self, *args)

    monkeypatch.setattr(ekfac.EKFACStrategy, "_direction_grads", logged_directions)
    monkeypatch.setattr(_kronecker.KroneckerFactor, "add", logged_add)
    monkeypatch.setattr(ekfac.EKFACStrategy, "_eigenbases", logged_bases)
    model, train, test = relu_problem
    hessian = EKFACSettings(class_tol=0.0, cache_bytes=cache_bytes)
    LayerInfluence(model, train, hessian=hessian).influence(test.tensors)
    log = "".join(events)
    assert log.count("Y") > 2 * len(train) // 32  # several directions per batch
    assert ("YY" in log) == (cache_bytes > 0)


def test_global_ekfac_is_block_diagonal_over_layers(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="ekfac")
    assert rel_err(li.global_influence(test.tensors), li.compound_influence(test.tensors)) < 1e-10


def _per_direction_passes(self, taps, desc, with_labels):
    """The unfused reference: every direction one backward pass through the whole batch.

    Directions from `torch.func.hessian` of the loss (not the closed form), all of them
    with a positive eigenvalue, dropped by `class_tol` with the same rule; each pass yields
    all B rows (a dropped direction's rows get a zero cotangent). Nothing is kept for
    scoring, which then runs its own passes.
    """
    from torch.func import hessian, vmap

    from captum_layerinf.influence.strategies._kronecker import grouped_all

    for i, (inputs, labels) in enumerate(self.ctx.batches(desc)):
        logits = taps.forward(inputs)
        with torch.no_grad():
            lam = vmap(hessian(self.ctx.loss.single))(logits.detach(), labels)
            values, vectors = torch.linalg.eigh((lam + lam.transpose(1, 2)) / 2)
            values, vectors = values.flip(1).clamp_min(0), vectors.flip(2)
            tail = values.flip(1).cumsum(1).flip(1)
            keep = (tail > self.settings.class_tol * values.sum(1, keepdim=True)) & (values > 0)
            roots = vectors * (values * keep).sqrt()[:, None, :]
        rows = torch.arange(len(labels))
        k = int(keep.sum(1).max())
        grads = [
            (rows, taps.output_grads(logits, roots[:, :, j], retain=j < k - 1)) for j in range(k)
        ]
        yield (
            ((i, 0, len(labels)),),
            grouped_all(taps.activations(), taps.layers),
            [(r, grouped_all(g, taps.layers)) for r, g in grads],
            None,
        )


@pytest.mark.parametrize("class_tol", [0.0, 0.05])
def test_gathered_directions_equal_one_backward_pass_per_direction(
    relu_problem, monkeypatch, class_tol
):
    # The fit gathers (example, direction) pairs into sub-batches and uses the closed-form
    # softmax Hessian; the reference runs every direction through the whole batch.
    from captum_layerinf.influence.strategies.ekfac import EKFACStrategy

    model, train, test = relu_problem
    settings = EKFACSettings(class_tol=class_tol, merge_bytes=0)  # sub-batches per batch
    forwards = _count_forwards(monkeypatch)
    fused = LayerInfluence(model, train, hessian=settings, batch_size=32)
    got = fused.influence(test.tensors)
    n_fit = len(forwards) - 1  # the test batch of scoring (training batches: kept pieces)
    if class_tol > 0:
        assert n_fit > 3  # some directions were gathered into sub-batches of their own
    monkeypatch.setattr(EKFACStrategy, "_passes", _per_direction_passes)
    ref = LayerInfluence(model, train, hessian=settings, batch_size=32)
    want = ref.influence(test.tensors)
    assert rel_err(got, want) < 1e-10
    for a, b in zip(_fitted(fused)._eigenvalues, _fitted(ref)._eigenvalues, strict=True):
        assert rel_err(a, b) < 1e-10


@pytest.mark.parametrize("fisher", ["expected", "empirical"])
def test_merged_batches_fit_and_score_as_batches_one_at_a_time(relu_problem, monkeypatch, fisher):
    model, train, test = relu_problem
    forwards = _count_forwards(monkeypatch)
    fits = {}
    for merge_bytes in (0, 2**23):
        forwards.clear()
        settings = EKFACSettings(fisher=fisher, class_tol=0.05, merge_bytes=merge_bytes)
        li = LayerInfluence(model, train, hessian=settings, batch_size=7)
        scores = (li.influence(test.tensors), li.self_influence())
        fits[merge_bytes] = (_fitted(li), scores, max(forwards))
    (one, one_scores, one_max), (merged, merged_scores, merged_max) = fits.values()
    assert one_max <= 7 < merged_max  # merged: forward passes over several batches at once
    assert merged.kept_factors(0) is not None and sorted(merged._kept) == sorted(one._kept)
    for i in one._kept:
        for b, (a, g) in one._kept[i].items():
            assert torch.equal(merged._kept[i][b][0], a)
            assert rel_err(merged._kept[i][b][1], g) < 1e-12
    for a, b in zip(merged._eigenvalues, one._eigenvalues, strict=True):
        assert rel_err(a, b) < 1e-10
    for got, want in zip(merged_scores, one_scores, strict=True):
        assert rel_err(got, want) < 1e-10


def test_sampled_labels_are_drawn_batch_by_batch(relu_problem):
    model, train, test = relu_problem
    scores = [
        LayerInfluence(
            model, train, hessian=EKFACSettings(fisher="sampled", merge_bytes=m), batch_size=7
        ).influence(test.tensors)
        for m in (0, 2**23)
    ]
    assert torch.equal(*scores)


def test_dropped_directions_cost_little_and_reach_the_exact_expectation_at_zero(relu_problem):
    model, train, test = relu_problem
    exact = LayerInfluence(model, train, hessian=EKFACSettings(class_tol=0.0)).influence(
        test.tensors
    )
    default = LayerInfluence(model, train, hessian="ekfac").influence(test.tensors)
    coarse = LayerInfluence(model, train, hessian=EKFACSettings(class_tol=0.5)).influence(
        test.tensors
    )
    assert rel_err(default, exact) < 1e-2
    assert rel_err(coarse, exact) > rel_err(default, exact)


def test_a_factor_whose_eigh_fails_gets_its_eigenvectors_from_an_svd(monkeypatch):
    """LAPACK's eigh did not converge on a rank-deficient densenet121 factor (1,152 wide,
    rank 73, float64); the singular vectors of the PSD factor stand in for it."""
    from captum_layerinf.influence.strategies import _kronecker

    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 40, 5, generator=gen, dtype=torch.float64)
    factor = _kronecker.KroneckerFactor(40, 8192, torch.device("cpu"), groups=1, rows_ok=False)
    factor.add(rows.transpose(0, 1).reshape(1, 40, 15).transpose(1, 2))  # rank 15 of 40

    def no_convergence(*args, **kwargs):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(torch.linalg, "eigh", no_convergence)
    q = factor.eigenbasis(torch.float64)[0]
    m = factor.dense[0]
    assert torch.allclose(q.T @ q, torch.eye(40, dtype=torch.float64), atol=1e-12)
    rotated = q.T @ m @ q
    off = rotated - torch.diag(rotated.diagonal())
    assert off.abs().max() <= 1e-10 * m.abs().max()


@pytest.mark.parametrize("groups", [2, 1])
@pytest.mark.parametrize("thin", ["left", "right"])
def test_sandwich_is_the_product_in_either_order(thin, groups):
    """`sandwich` picks the cheaper association; both are the same product (one group's
    bases, `[1, d, r]`, are multiplied as matrices)."""
    gen = torch.Generator().manual_seed(0)
    wide, narrow = (3, 40) if thin == "left" else (40, 3)
    left = torch.randn(groups, wide, 30, generator=gen, dtype=torch.float64)
    m = torch.randn(4, groups, 30, 50, generator=gen, dtype=torch.float64)
    right = torch.randn(groups, 50, narrow, generator=gen, dtype=torch.float64)
    got = sandwich(left, m, right)
    assert got.shape == (4, groups, wide, narrow)
    assert torch.allclose(got, left @ m @ right, rtol=1e-12, atol=1e-12)


def test_row_basis_is_an_orthonormal_basis_of_the_rows_span():
    """Rank 5 in 40 rows of dimension 300 (repeated, scaled and mixed rows): 5 columns,
    orthonormal, and projecting the rows onto them gives the rows back."""
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(40, 5, generator=gen, dtype=torch.float64) @ torch.randn(
        5, 300, generator=gen, dtype=torch.float64
    )
    rows[3] *= 1e3
    basis = _row_basis(rows)[0]
    assert basis.shape == (300, 5)
    assert torch.allclose(basis.T @ basis, torch.eye(5, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(rows @ basis @ basis.T, rows, atol=1e-9 * float(rows.abs().max()))


def _count_forwards(monkeypatch) -> list[int]:
    """The batch size of every `Taps.forward` from now on, appended as they run."""
    from captum_layerinf.influence import _taps

    forwards: list[int] = []
    original = _taps.Taps.forward

    def counted(self, inputs):
        forwards.append(len(inputs[0]))
        return original(self, inputs)

    monkeypatch.setattr(_taps.Taps, "forward", counted)
    return forwards
