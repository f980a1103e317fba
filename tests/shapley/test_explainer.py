import pytest
import shap
import torch
from torch import nn

from captum_layerinf.shapley import COMPOUND, BidirectionalExplainer
from captum_layerinf.shapley import explainer as explainer_module


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def test_shapes_and_rows(digits, deep_result):
    model, li, train, test = digits
    r = deep_result
    n, n_rows = len(test), len(li.layer_names) + 1
    assert r.shap_values.shape == (n, 2, 1, 8, 8) and r.shap_values.dtype == torch.float32
    for name in ("proponents", "proponent_scores", "opponents", "opponent_scores"):
        assert getattr(r, name).shape == (n_rows, n, 3)
    assert r.layer_names == [*li.layer_names, COMPOUND]
    assert torch.equal(r.predictions, _logits(model, test[:][0]).argmax(1))
    assert r.predictions.ne(r.labels).any(), "the fixture should hold a misclassified digit"
    # best first: proponents descending, opponents ascending, and the two sides disjoint
    assert (r.proponent_scores.diff(dim=-1) <= 0).all()
    assert (r.opponent_scores.diff(dim=-1) >= 0).all()
    assert (r.proponent_scores[..., -1] > r.opponent_scores[..., -1]).all()
    # stored training images and labels are the training set's at those positions
    x_train, y_train = train[:]
    assert torch.equal(r.train_inputs, x_train[r.train_positions])
    assert torch.equal(r.proponent_labels, y_train[r.proponents])
    assert torch.equal(r.opponent_labels, y_train[r.opponents])
    assert r.train_shap_values.shape == (len(r.train_positions), 1, 8, 8)
    for t in (r.inputs, r.shap_values, r.proponents, r.train_inputs, r.foreground_share):
        assert t.device.type == "cpu"


def test_rows_equal_layer_influence_top_k(digits, deep_result):
    """Per-layer rows = LayerInfluence.influence(k); last row = compound_influence(k)."""
    _, li, _, test = digits
    r = deep_result
    for proponents, idx, scores in (
        (True, r.proponents, r.proponent_scores),
        (False, r.opponents, r.opponent_scores),
    ):
        layers = li.influence(test[:], k=3, proponents=proponents)
        total = li.compound_influence(test[:], k=3, proponents=proponents)
        assert torch.equal(idx[:-1], layers.indices)
        assert torch.allclose(scores[:-1], layers.influence_scores)
        assert torch.equal(idx[-1], total.indices)
        assert torch.allclose(scores[-1], total.influence_scores, rtol=1e-4)


def test_streamed_top_k_equals_dense(digits, background, monkeypatch):
    model, li, _, test = digits
    make = BidirectionalExplainer(model, li, "deep", background=background)
    dense = make.explain(test[:3], k=2)
    monkeypatch.setattr(explainer_module, "DENSE_SCORES_BYTES", 0)
    streamed = make.explain(test[:3], k=2)
    assert torch.equal(dense.proponents, streamed.proponents)
    assert torch.equal(dense.opponents, streamed.opponents)
    assert torch.allclose(dense.opponent_scores, streamed.opponent_scores, rtol=1e-4)


def test_deep_values_are_shaps_for_predicted_and_true_class(digits, background, deep_result):
    """Equal to shap's DeepExplainer on all outputs, indexed; additive to the logit gap."""
    model, _, _, test = digits
    x, _ = test[:]
    r = deep_result
    full = torch.from_numpy(shap.DeepExplainer(model, background).shap_values(x))  # [n,1,8,8,10]
    for slot, classes in ((0, r.predictions), (1, r.labels)):
        expected = full[torch.arange(len(x)), ..., classes]
        assert torch.allclose(r.shap_values[:, slot].double(), expected, atol=1e-6)
        gap = _logits(model, x) - _logits(model, background).mean(0)
        gap = gap[torch.arange(len(x)), classes]
        assert torch.allclose(r.shap_values[:, slot].sum((1, 2, 3)), gap, atol=1e-4)


def test_gradient_is_deterministic_with_a_seed(digits):
    model, li, _, test = digits
    data = test[:2]
    a = BidirectionalExplainer(model, li, nsamples=20, n_background=8, seed=3).explain(data, k=1)
    b = BidirectionalExplainer(model, li, nsamples=20, n_background=8, seed=3).explain(data, k=1)
    c = BidirectionalExplainer(model, li, nsamples=20, n_background=8, seed=4).explain(data, k=1)
    assert torch.equal(a.shap_values, b.shap_values)
    assert not torch.allclose(a.shap_values, c.shap_values)
    assert a.settings["shap_explainer"] == "gradient" and a.settings["n_background"] == 8


def test_dataloader_and_dataset_inputs_equal_tuple(digits, background):
    model, li, _, test = digits
    make = BidirectionalExplainer(model, li, "deep", background=background)
    loader = torch.utils.data.DataLoader(test, batch_size=2)
    a, b, c = make.explain(test[:], k=2), make.explain(loader, k=2), make.explain(test, k=2)
    for other in (b, c):
        assert torch.equal(a.shap_values, other.shap_values)
        assert torch.equal(a.proponents, other.proponents)
        assert torch.equal(a.inputs, other.inputs)


def test_training_set_as_dataloader_equals_dataset(digits):
    """Default background and training images are gathered by position from either."""
    from captum_layerinf import LayerInfluence

    model, li, train, test = digits
    loader = torch.utils.data.DataLoader(train, batch_size=32)
    a = BidirectionalExplainer(model, li, "deep", n_background=8).explain(test[:2], k=2)
    b = BidirectionalExplainer(model, LayerInfluence(model, loader), "deep", n_background=8)
    b = b.explain(test[:2], k=2)
    assert torch.equal(a.proponents, b.proponents) and torch.equal(a.train_inputs, b.train_inputs)
    assert torch.equal(a.shap_values, b.shap_values)


def test_background_as_dataset_equals_tensor(digits, background):
    model, li, train, test = digits
    as_tensor = BidirectionalExplainer(model, li, "deep", background=background)
    subset = torch.utils.data.TensorDataset(*train[:16])
    as_dataset = BidirectionalExplainer(model, li, "deep", background=subset)
    assert torch.equal(
        as_tensor.explain(test[:2], k=1).shap_values, as_dataset.explain(test[:2], k=1).shap_values
    )


def test_shap_instance_equals_named_backend(digits, background, deep_result):
    model, li, _, test = digits
    instance = shap.DeepExplainer(model, background)
    r = BidirectionalExplainer(model, li, instance).explain(test[:], k=3)
    assert torch.allclose(r.shap_values, deep_result.shap_values, atol=1e-6)
    assert r.settings["shap_explainer"] == "DeepExplainer"


def _inplace_copy(model):
    import copy

    clone = copy.deepcopy(model)
    for m in clone.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = True
    return clone


def test_deep_handles_inplace_relu(digits, background, deep_result):
    """In-place ReLU (as in torchvision VGG) gives the same values, without falling back."""
    import warnings

    from captum_layerinf import LayerInfluence

    model, _, train, test = digits
    clone = _inplace_copy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = BidirectionalExplainer(
            clone, LayerInfluence(clone, train), "deep", background=background
        ).explain(test[:], k=1)
    assert r.settings["shap_explainer"] == "deep"
    assert torch.allclose(r.shap_values, deep_result.shap_values, atol=1e-6)
    assert all(m.inplace for m in clone.modules() if isinstance(m, nn.ReLU)), "model untouched"


class _SharedReLU(nn.Module):
    """One ReLU module called twice (as torchvision ResNet's `self.relu`)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.relu = nn.ReLU()
        self.fc1 = nn.Linear(3 * 64, 8)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(torch.flatten(self.relu(self.conv(x)), 1))))


class _FunctionalMaxPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 16, 10)

    def forward(self, x):
        h = nn.functional.max_pool2d(nn.functional.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(h, 1))


def test_deep_falls_back_to_gradient_with_a_warning(digits, background):
    from captum_layerinf import LayerInfluence

    _, _, train, test = digits
    for cls, reason in ((_SharedReLU, "called more than once"), (_FunctionalMaxPool, "sum")):
        torch.manual_seed(0)
        model = cls().eval()
        li = LayerInfluence(model, train)
        make = BidirectionalExplainer(model, li, "deep", background=background, nsamples=10)
        with pytest.warns(UserWarning, match=reason):
            r = make.explain(test[:2], k=1)
        assert r.settings["shap_explainer"] == "gradient"
        plain = BidirectionalExplainer(model, li, background=background, nsamples=10)
        assert torch.equal(r.shap_values, plain.explain(test[:2], k=1).shap_values)


@pytest.fixture
def _numba_as_python(monkeypatch):
    """shap's numba kernels as the plain Python they are written in.

    shap compiles them on first use in every process (no cache): 30 s on a busy 2-core
    machine, against 0.2 s of work here. Same code, same results, without the JIT.
    """
    import sys
    from types import SimpleNamespace

    from numba.core.registry import CPUDispatcher

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "shap" and module is not None:
            for attr, value in vars(module).copy().items():
                if isinstance(value, CPUDispatcher):
                    monkeypatch.setattr(module, attr, value.py_func)
    # the image masker's tree builder uses numba.typed.List as a heap: a list in Python
    monkeypatch.setattr(
        "shap.maskers._image.numba", SimpleNamespace(typed=SimpleNamespace(List=list))
    )


@pytest.mark.usefixtures("_numba_as_python")
def test_partition_is_efficient(digits, background):
    """Owen values sum to f(x) - f(fully masked) = logit(x) - logit(background mean)."""
    model, li, _, test = digits
    x, _ = test[:]
    make = BidirectionalExplainer(model, li, "partition", background=background, nsamples=40)
    r = make.explain(test[:], k=1)
    gap = _logits(model, x) - _logits(model, background.mean(0, keepdim=True))
    for slot, classes in ((0, r.predictions), (1, r.labels)):
        expected = gap[torch.arange(len(x)), classes].double()
        assert expected.abs().max() > 0.5, "the logit gaps should not be trivially small"
        assert torch.allclose(r.shap_values[:, slot].sum((1, 2, 3)).double(), expected, atol=1e-4)


@pytest.mark.cuda
def test_cuda_equals_cpu(digits, background, deep_result, monkeypatch):
    import copy

    from captum_layerinf import LayerInfluence

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model, _, train, test = digits
    gpu_model = copy.deepcopy(model).cuda()
    li = LayerInfluence(gpu_model, tuple(t.cuda() for t in train.tensors))
    x, y = test[:]
    for backend in ("deep", shap.DeepExplainer(gpu_model, background.cuda())):
        r = BidirectionalExplainer(gpu_model, li, backend, background=background.cuda()).explain(
            (x.cuda(), y.cuda()), k=3, masks=(x[:, 0] > 0.25).cuda(), explain_train=True
        )
        assert r.shap_values.device.type == "cpu" and r.proponents.device.type == "cpu"
        assert torch.allclose(r.shap_values, deep_result.shap_values, atol=1e-4)
        assert torch.equal(r.proponents, deep_result.proponents)
        assert torch.allclose(r.foreground_share, deep_result.foreground_share, atol=1e-4)
