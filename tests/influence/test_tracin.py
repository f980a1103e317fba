"""`hessian="tracin"`: equals Captum's TracInCP per layer; JL projection keeps inner products."""

import math
import warnings

import pytest
import torch
from captum.influence import TracInCP
from torch import nn

from captum_layerinf import LayerInfluence, TracInSettings
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.training import train_classifier
from tests.conftest import rel_err, tiny_cnn

RATES = [0.3, 0.2, 0.1]


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """A float64 tiny CNN trained for 3 epochs, a checkpoint file saved after each."""
    folder = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    train, test = load_digits_split(80, 6, seed=2, dtype=torch.float64)
    model = tiny_cnn().double()
    paths, states = [], []

    def save(epoch, m):
        paths.append(str(folder / f"epoch{epoch}.pt"))
        states.append({k: v.clone() for k, v in m.state_dict().items()})
        torch.save(m.state_dict(), paths[-1])

    train_classifier(model, train, epochs=3, lr=1e-2, on_epoch_end=save)
    with torch.no_grad():  # the model's own weights differ from every checkpoint
        for p in model.parameters():
            p.add_(0.01)
    return model, train, test, paths, states


def test_equals_captum_tracincp_per_layer(trajectory):
    model, train, test, paths, _ = trajectory
    li = LayerInfluence(
        model, train, hessian="tracin", checkpoints=paths, learning_rates=RATES, batch_size=32
    )
    ours = li.influence(test.tensors)
    assert ours.shape == (3, len(test), len(train))
    rate_of = dict(zip(paths, RATES, strict=True))

    def load(m, path):
        m.load_state_dict(torch.load(path, weights_only=True))
        return rate_of[path]

    for i, layer in enumerate(li.layer_names):
        captum = TracInCP(
            model,
            train,
            checkpoints=paths,
            checkpoints_load_func=load,
            layers=[layer],
            loss_fn=nn.CrossEntropyLoss(reduction="none"),
            batch_size=32,
            sample_wise_grads_per_batch=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = captum.influence(test.tensors)
        assert rel_err(ours[i], theirs) <= 1e-10, layer


def test_state_dicts_equal_paths_and_weights_are_restored(trajectory):
    model, train, test, paths, states = trajectory
    before = {k: v.clone() for k, v in model.state_dict().items()}
    by_path = LayerInfluence(model, train, hessian="tracin", checkpoints=paths)
    by_state = LayerInfluence(
        model, train, hessian=TracInSettings(checkpoints=states, learning_rates=[1, 1, 1])
    )
    assert rel_err(by_state.influence(test.tensors), by_path.influence(test.tensors)) <= 1e-12
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_self_influence_is_the_diagonal_and_compound_is_the_sum(trajectory):
    model, train, _, paths, _ = trajectory
    li = LayerInfluence(model, train, hessian="tracin", checkpoints=paths, learning_rates=RATES)
    full = li.influence(train.tensors)
    assert rel_err(li.self_influence(), torch.diagonal(full, dim1=1, dim2=2)) <= 1e-10
    assert rel_err(li.compound_influence(train.tensors), full.sum(0)) <= 1e-12


def test_random_projection_preserves_inner_products_within_the_jl_bound(trajectory):
    # ⟨Ra, Rb⟩ with R = Gaussian [P, d] / sqrt(d) is unbiased with standard deviation
    # sqrt((‖a‖²‖b‖² + ⟨a,b⟩²) / d) <= sqrt(2 / d) ‖a‖‖b‖. Summed over checkpoints with
    # η_c >= 0, Cauchy-Schwarz bounds Σ_c η_c ‖a_c‖‖b_c‖ by sqrt(self(ẑ) · self(z)).
    # We require every pair within 6 standard deviations.
    model, train, test, paths, _ = trajectory
    d = 256
    exact = LayerInfluence(model, train, hessian="tracin", checkpoints=paths, learning_rates=RATES)
    projected = LayerInfluence(
        model,
        train,
        hessian=TracInSettings(checkpoints=paths, learning_rates=RATES, projection_dim=d),
    )
    s, sp = exact.influence(test.tensors), projected.influence(test.tensors)
    bound = torch.sqrt(
        exact.self_influence(test.tensors)[:, :, None] * exact.self_influence()[:, None, :]
    )
    # Only the linear layer (650 parameters) is larger than d; the convolutions are not projected.
    assert torch.equal(sp[:2], s[:2])
    assert not torch.equal(sp[2], s[2])
    assert ((sp[2] - s[2]).abs() <= 6 * math.sqrt(2 / d) * bound[2]).all()
    assert torch.corrcoef(torch.stack([sp[2].flatten(), s[2].flatten()]))[0, 1] > 0.95


def test_bad_tracin_arguments(trajectory):
    model, train, _, paths, _ = trajectory
    with pytest.raises(ValueError, match=r"needs checkpoints=\[\.\.\.\]"):
        LayerInfluence(model, train, hessian="tracin")
    with pytest.raises(ValueError, match="got 2 learning_rates for 3 checkpoints"):
        LayerInfluence(model, train, hessian="tracin", checkpoints=paths, learning_rates=[1, 2])
    with pytest.raises(
        TypeError, match=r"hessian='auto' takes no argument \['checkpoints'\].*hessian='tracin'"
    ):
        LayerInfluence(model, train, checkpoints=paths)


def test_a_checkpoint_directory_is_read_in_natural_order(trajectory, tmp_path):
    model, train, test, paths, _ = trajectory
    folder = tmp_path / "run"
    folder.mkdir()
    for i, name in zip([2, 0, 1], ["epoch10.pt", "epoch2.pt", "epoch9.pt"], strict=True):
        (folder / name).write_bytes(open(paths[i], "rb").read())
    (folder / ".lock").write_text("")
    settings = TracInSettings(checkpoints=str(folder))
    assert [c.rsplit("/", 1)[1] for c in settings.checkpoints] == [
        "epoch2.pt",
        "epoch9.pt",
        "epoch10.pt",
    ]
    by_dir = LayerInfluence(model, train, hessian="tracin", checkpoints=folder)
    by_list = LayerInfluence(model, train, hessian="tracin", checkpoints=paths)
    assert rel_err(by_dir.influence(test.tensors), by_list.influence(test.tensors)) <= 1e-12
    with pytest.raises(FileNotFoundError, match="neither a directory .* nor a file"):
        TracInSettings(checkpoints=str(tmp_path / "missing"))


def test_per_example_gradients_are_formed_in_bounded_chunks(trajectory, monkeypatch):
    from captum_layerinf.influence.strategies import tracin

    model, train, test, paths, _ = trajectory
    biggest = 650 * 8  # the linear layer's gradient of one example, float64
    seen = []

    class Spy(tracin.BlockGradients):
        def chunks(self, inputs, labels):
            for i, rows, g in super().chunks(inputs, labels):
                seen.append(g.numel() * g.element_size())
                yield i, rows, g

    monkeypatch.setattr(tracin, "BlockGradients", Spy)
    whole = LayerInfluence(model, train, hessian="tracin", checkpoints=paths, learning_rates=RATES)
    expected = whole.influence(test.tensors), whole.self_influence()
    assert max(seen) > 3 * biggest
    seen.clear()
    small = TracInSettings(checkpoints=paths, learning_rates=RATES, chunk_bytes=3 * biggest)
    chunked = LayerInfluence(model, train, hessian=small, batch_size=32)
    assert rel_err(chunked.influence(test.tensors), expected[0]) <= 1e-12
    assert rel_err(chunked.self_influence(), expected[1]) <= 1e-12
    assert max(seen) <= 3 * biggest
