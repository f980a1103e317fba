"""Equivalences: ours = Captum, layer sum = compound, top-k = full matrix, batching, data forms."""

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from captum_layerinf import LayerInfluence
from tests.conftest import rel_err

from ._reference import layer_names_of, looped_grads

DAMPING = 1e-2


@pytest.fixture(scope="module")
def fitted(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, damping=DAMPING, batch_size=32)
    return li, li.influence(test.tensors), test


def test_exact_equals_captum_naive_influence_per_layer(relu_problem, fitted):
    model, train, test = relu_problem
    _, ours, _ = fitted
    captum = LayerInfluence(model, train, damping=DAMPING, hessian="captum", batch_size=32)
    theirs = captum.influence(test.tensors)
    for i in range(len(ours)):
        assert rel_err(ours[i], theirs[i]) <= 1e-6
    assert rel_err(captum.self_influence(), fitted[0].self_influence()) <= 1e-6


def test_captum_strategy_equals_captums_own_influence(relu_problem, tmp_path):
    """hessian="captum" scores training batches with Captum's embeddings: the same numbers
    as Captum's `NaiveInfluenceFunction.influence` over its training set, times n."""
    from captum.influence import NaiveInfluenceFunction

    model, train, test = relu_problem
    x, y = train.tensors[0][:40], train.tensors[1][:40]
    layer = next(n for n, m in model.named_modules() if list(m.parameters(recurse=False)))
    li = LayerInfluence(model, (x, y), layers=[layer], hessian="captum", batch_size=16)
    ours = li.influence(test.tensors)[0]
    torch.save(model.state_dict(), tmp_path / "checkpoint.pt")
    loader = DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    numel = sum(p.numel() for p in model.get_submodule(layer).parameters())
    with torch.random.fork_rng(devices=[]):
        captum = NaiveInfluenceFunction(
            model,
            loader,
            str(tmp_path / "checkpoint.pt"),
            layers=[layer],
            loss_fn=li.loss.fn,
            batch_size=16,
            projection_dim=numel,
            hessian_reg=li.damping * len(y),
            hessian_inverse_tol=1e-12,
        )
        theirs = captum.influence(test.tensors) * len(y)
    assert torch.equal(ours, theirs)


def test_layer_sum_equals_compound(fitted):
    li, scores, test = fitted
    compound = li.compound_influence(test.tensors)
    assert rel_err(compound, scores.sum(0)) <= 1e-12


@pytest.mark.parametrize("proponents", [True, False])
def test_k_results_are_the_top_k_of_the_full_matrix(fitted, proponents):
    li, scores, test = fitted
    top = li.influence(test.tensors, k=4, proponents=proponents)
    ref = torch.topk(scores, 4, dim=-1, largest=proponents)
    assert top.indices.shape == top.influence_scores.shape == (3, len(test), 4)
    assert torch.equal(top.indices, ref.indices)
    assert torch.allclose(top.influence_scores, ref.values, rtol=1e-12, atol=0)
    top_c = li.compound_influence(test.tensors, k=4, proponents=proponents)
    ref_c = torch.topk(scores.sum(0), 4, dim=-1, largest=proponents)
    assert torch.equal(top_c.indices, ref_c.indices)


def test_global_k_results_are_the_top_k(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, damping=DAMPING)
    full = li.global_influence(test.tensors)
    top = li.global_influence(test.tensors, k=3, proponents=False)
    assert torch.equal(top.indices, torch.topk(full, 3, largest=False).indices)


def test_invariant_to_batch_size(relu_problem, fitted):
    model, train, test = relu_problem
    _, ref, _ = fitted
    other = LayerInfluence(model, train, damping=DAMPING, batch_size=7)
    assert rel_err(other.influence(test.tensors), ref) <= 1e-10


def test_dataset_dataloader_and_tuple_agree(relu_problem, fitted):
    model, train, test = relu_problem
    _, ref, _ = fitted
    loader = DataLoader(train, batch_size=20, shuffle=False)
    via_loader = LayerInfluence(model, loader, damping=DAMPING)
    test_loader = DataLoader(test, batch_size=3)
    assert rel_err(via_loader.influence(test_loader), ref) <= 1e-10
    via_tuple = LayerInfluence(model, train.tensors, damping=DAMPING)
    assert rel_err(via_tuple.influence(test.tensors), ref) <= 1e-10


class _Counted(Dataset):
    """A map-style dataset that counts the items read."""

    def __init__(self, data):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        self.reads += 1
        return self.data[i]


class _Stream(IterableDataset):
    def __init__(self, data):
        self.data = data

    def __iter__(self):
        return iter(self.data[i] for i in range(len(self.data)))


def test_training_examples_are_counted_by_length_only_where_batched_here(relu_problem):
    """A dataset `LayerInfluence` batches itself is counted by its length, without reading
    an item; a DataLoader or an iterable-style dataset is counted over one pass."""
    model, train, _ = relu_problem
    n = len(train)
    own = _Counted(train)
    li = LayerInfluence(model, own, damping=DAMPING)
    own.reads = 0
    assert li._n_train() == n
    assert own.reads == 0
    given = _Counted(train)
    assert LayerInfluence(model, DataLoader(given, batch_size=7), damping=DAMPING)._n_train() == n
    assert given.reads >= n
    assert LayerInfluence(model, _Stream(train), damping=DAMPING)._n_train() == n


@pytest.mark.parametrize("hessian", ["auto", "ekfac"])
def test_an_iterable_dataset_without_length_gives_the_same_scores(relu_problem, hessian):
    model, train, test = relu_problem
    want = LayerInfluence(model, train, damping=DAMPING, hessian=hessian, batch_size=7)
    got = LayerInfluence(
        model, _Stream(train), damping=DAMPING, hessian=hessian, batch_size=7, show_progress=True
    )
    assert rel_err(got.influence(test.tensors), want.influence(test.tensors)) < 1e-10
    assert rel_err(got.self_influence(), want.self_influence()) < 1e-10


def test_self_influence_is_the_diagonal_of_influence_on_the_training_set(fitted, relu_problem):
    li, _, _ = fitted
    _, train, _ = relu_problem
    on_train = li.influence(train.tensors)
    diag = torch.diagonal(on_train, dim1=1, dim2=2)
    assert rel_err(li.self_influence(), diag) <= 1e-10


def test_identity_is_the_gradient_dot_product(relu_problem):
    model, train, test = relu_problem
    li = LayerInfluence(model, train, hessian="identity")
    ours = li.influence(test.tensors)
    for i, layer in enumerate(li.layer_names):
        names = layer_names_of(model, layer)
        g_tr = looped_grads(model, *train.tensors, names)
        g_te = looped_grads(model, *test.tensors, names)
        assert rel_err(ours[i], g_te @ g_tr.T) <= 1e-10


def test_captum_warns_where_it_drops_negative_curvature(relu_problem, tanh_problem):
    # Tanh makes the middle layer's damped block indefinite at this damping: Captum drops
    # its negative eigenvalues, and the fit says so; the ReLU CNN's blocks keep them all.
    for (model, train, test), short in [(relu_problem, []), (tanh_problem, [1])]:
        li = LayerInfluence(model, train, damping=DAMPING, hessian="captum")
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            li.influence(test.tensors)
        strategy, _ = li._fitted["layers"]
        assert [i for i, b in enumerate(strategy.blocks) if strategy.kept[i] < b.numel] == short
        said = [str(w.message) for w in seen if "Captum dropped eigenvalues" in str(w.message)]
        assert len(said) == len(short)
        assert all(li.layer_names[i] in said[0] for i in short)
