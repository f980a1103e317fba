"""MIM: the vectorised measure equals its definition, its axioms hold, one-vs-rest is binary."""

import pytest
import torch

from captum_layerinf.attr import monotone_influence
from captum_layerinf.attr._selection import coefficient_of_variation, gini
from captum_layerinf.attr.mim import binary_mim


def naive_mim(x, ref, x_labels, ref_labels, target, alpha):
    """The definition, one point at a time: Σ over opposite points of α(‖x − y‖)(x − y)."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        t = int(target[b])
        for n in range(ref.shape[0]):
            if (int(ref_labels[n]) == t) == (int(x_labels[b]) == t):
                continue  # same side of t-versus-rest: not an opposite point
            diff = x[b] - ref[n]
            r = diff.norm()
            if r == 0:
                continue
            weight = alpha(r) if callable(alpha) else r**-alpha
            out[b] += weight * diff
    return out


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(30, 7, generator=g, dtype=torch.float64)
    x = torch.randn(5, 7, generator=g, dtype=torch.float64)
    ref_labels = torch.randint(0, 4, (30,), generator=g)
    x_labels = torch.tensor([0, 1, 2, 3, 1])
    return x, ref, x_labels, ref_labels


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.5, lambda r: torch.exp(-r)])
def test_vectorised_equals_definition(data, alpha):
    x, ref, x_labels, ref_labels = data
    target = torch.tensor([0, 1, 0, 2, 3])  # predicted = target for two, not for three
    got = monotone_influence(x, ref, x_labels, ref_labels, target, alpha)
    want = naive_mim(x, ref, x_labels, ref_labels, target, alpha)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_chunked_equals_whole(data):
    x, ref, x_labels, ref_labels = data
    opposite = ref_labels[None, :] != x_labels[:, None]
    whole = binary_mim(x, ref, opposite, 1.0, chunk_size=1000)
    torch.testing.assert_close(binary_mim(x, ref, opposite, 1.0, chunk_size=7), whole)


def test_point_at_distance_zero_adds_nothing(data):
    x, ref, x_labels, ref_labels = data
    ref2 = torch.cat([ref, x[:1]])  # a copy of x[0] with another label
    labels2 = torch.cat([ref_labels, torch.tensor([(int(x_labels[0]) + 1) % 4])])
    got = monotone_influence(x[:1], ref2, x_labels[:1], labels2, x_labels[:1], 2.0)
    want = monotone_influence(x[:1], ref, x_labels[:1], ref_labels, x_labels[:1], 2.0)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want)


def test_two_classes_one_vs_rest_is_binary_mim(data):
    x, ref, _, _ = data
    ref_labels = (ref[:, 0] > 0).long()
    x_labels = (x[:, 0] > 0).long()
    binary = naive_mim(x, ref, x_labels, ref_labels, x_labels, 1.0)  # opposite = other label
    for t in (0, 1):
        got = monotone_influence(x, ref, x_labels, ref_labels, t, 1.0)
        torch.testing.assert_close(got, binary, rtol=1e-10, atol=1e-12)


def test_shift_invariance_and_rotation_faithfulness(data):
    """Two of the measure's axioms: shifting all points changes nothing; rotating them
    rotates the influence vector."""
    x, ref, x_labels, ref_labels = data
    phi = monotone_influence(x, ref, x_labels, ref_labels, x_labels)
    shift = torch.randn(7, dtype=torch.float64)
    torch.testing.assert_close(
        monotone_influence(x + shift, ref + shift, x_labels, ref_labels, x_labels), phi
    )
    q, _ = torch.linalg.qr(torch.randn(7, 7, dtype=torch.float64))
    rotated = monotone_influence(x @ q.T, ref @ q.T, x_labels, ref_labels, x_labels)
    torch.testing.assert_close(rotated, phi @ q.T)


def test_bad_arguments(data):
    x, ref, x_labels, ref_labels = data
    with pytest.raises(ValueError, match="same D"):
        monotone_influence(x[:, :3], ref, x_labels, ref_labels, 0)
    with pytest.raises(ValueError, match="labels must be"):
        monotone_influence(x, ref, x_labels[:2], ref_labels, 0)
    with pytest.raises(ValueError, match="non-negative"):
        monotone_influence(x, ref, x_labels, ref_labels, 0, alpha=lambda r: -r)
    with pytest.raises(ValueError, match="same shape"):
        monotone_influence(x, ref, x_labels, ref_labels, 0, alpha=lambda r: r.sum())
    with pytest.raises(TypeError, match="alpha"):
        monotone_influence(x, ref, x_labels, ref_labels, 0, alpha="inverse")


def test_gini_and_cv_match_their_definitions():
    g = torch.Generator().manual_seed(3)
    v = torch.rand(4, 9, generator=g, dtype=torch.float64)
    v[1, 3:] = 0.0
    pair = (v[:, :, None] - v[:, None, :]).abs().sum((1, 2))
    torch.testing.assert_close(gini(v), pair / (2 * 9 * 9 * v.mean(1)))
    torch.testing.assert_close(coefficient_of_variation(v), v.std(1, correction=0) / v.mean(1))
    torch.testing.assert_close(gini(7.0 * v), gini(v))  # scale-free
    flat, one_hot = torch.ones(1, 5), torch.eye(5)[:1]
    assert gini(flat).item() == 0.0 and coefficient_of_variation(flat).item() == 0.0
    assert gini(one_hot).item() == pytest.approx(1 - 1 / 5)
    assert gini(torch.zeros(1, 5)).item() == 0.0
