"""Ground truth: influence predicts leave-one-out retraining of a convex model.

Multinomial logistic regression (one nn.Linear) on digits, trained to convergence with
L2 weight decay `wd` on the mean loss. With `damping=wd` the damped Hessian is the
Hessian of the training objective, so `global_influence / n` predicts the change of the
test loss when a training example is removed and the model retrained.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from captum_layerinf import LayerInfluence
from captum_layerinf.datasets import load_digits_split

WD = 1e-2
N_TRAIN = 300


def fit(model: nn.Linear, x, y, weights: torch.Tensor, steps: int = 30) -> None:
    """Minimises (1/n) Σ_i w_i L_i + wd/2 ||θ||² by Newton's method, to round-off.

    The objective is strongly convex; its gradient and Hessian are written out by hand
    (softmax regression), independent of the library's autograd-based code.
    """
    xa = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)  # [n, d+1]: bias column
    theta = torch.cat([model.weight.detach(), model.bias.detach()[:, None]], 1)  # [C, d+1]
    n_classes, dim = theta.shape
    onehot = F.one_hot(y, n_classes).to(x.dtype)
    for _ in range(steps):
        p = torch.softmax(xa @ theta.T, 1)
        grad = ((weights[:, None] * (p - onehot)).T @ xa) / N_TRAIN + WD * theta
        if grad.abs().max() < 1e-14:
            break
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # [n, C, C]
        lam = lam * (weights / N_TRAIN)[:, None, None]
        outer = xa[:, :, None] * xa[:, None, :]  # [n, d+1, d+1]
        hess = (lam.flatten(1).T @ outer.flatten(1)).view(n_classes, n_classes, dim, dim)
        hess = hess.permute(0, 2, 1, 3).reshape(n_classes * dim, n_classes * dim)
        hess += WD * torch.eye(len(hess), dtype=x.dtype)
        theta = theta - torch.linalg.solve(hess, grad.flatten()).view_as(theta)
    assert grad.abs().max() < 1e-13
    with torch.no_grad():
        model.weight.copy_(theta[:, :-1])
        model.bias.copy_(theta[:, -1])


@pytest.mark.slow  # retrains the model once per removed example
def test_global_influence_predicts_leave_one_out_retraining():
    torch.manual_seed(0)
    train, test = load_digits_split(N_TRAIN, 3, seed=1, dtype=torch.float64)
    x, y = train.tensors[0].flatten(1), train.tensors[1]
    xt, yt = test.tensors[0].flatten(1), test.tensors[1]
    model = nn.Linear(64, 10).double()
    ones = torch.ones(N_TRAIN, dtype=torch.float64)
    fit(model, x, y, ones)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    li = LayerInfluence(model, (x, y), damping=WD)
    assert li.layer_names == [""]
    predicted = li.global_influence((xt, yt)) / N_TRAIN  # [n_test, n_train]
    # The single layer is all the parameters: layer-wise equals global here.
    assert torch.allclose(li.influence((xt, yt))[0] / N_TRAIN, predicted, rtol=1e-10, atol=0)

    with torch.no_grad():
        base = F.cross_entropy(model(xt), yt, reduction="none")
    gen = torch.Generator().manual_seed(0)
    for k in range(len(yt)):
        strongest = predicted[k].abs().argsort(descending=True)[:20]
        rest = torch.tensor([j for j in range(N_TRAIN) if j not in set(strongest.tolist())])
        chosen = torch.cat([strongest, rest[torch.randperm(len(rest), generator=gen)[:20]]])
        actual = []
        for j in chosen.tolist():
            model.load_state_dict(state)
            weights = ones.clone()
            weights[j] = 0
            fit(model, x, y, weights)
            with torch.no_grad():
                actual.append(F.cross_entropy(model(xt[k : k + 1]), yt[k : k + 1]) - base[k])
        actual = torch.stack(actual)
        pred = predicted[k, chosen]
        pearson = torch.corrcoef(torch.stack([pred, actual]))[0, 1]
        assert pearson >= 0.99, (k, float(pearson))
        # Same sign convention: a positive score (proponent) means removal raises the loss.
        assert (torch.sign(pred[:10]) == torch.sign(actual[:10])).all()
    model.load_state_dict(state)
