"""torchvision architectures at 32x32, random weights (nothing downloaded): every method runs.

Tests restrict `layers=` to a stem conv, a batch-norm and the classifier, on resnet18 in
every run. The tests marked `zoo` (in `make test`, left out of `make test-fast`; about 3
minutes on 2 cores) run the same on the other architectures, make one full-default call
per model (every layer, global influence, check) and run every registered strategy on those
layers.
"""

import warnings

import pytest
import torch
import torchvision
from torch import nn

from captum_layerinf import LayerInfluence, available_strategies
from captum_layerinf.influence._blocks import Scope

N_CLASSES, N_TRAIN, N_TEST = 3, 6, 2
ARCHS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "vgg11_bn", "shufflenet_v2_x0_5"]
ARCHS += ["densenet121"]


FAST = {"resnet18"}


def _params():
    """resnet18 in every run; the other architectures (30 s to minutes each) under `zoo`."""
    return [pytest.param(a, marks=[] if a in FAST else [pytest.mark.zoo]) for a in ARCHS]


def build(arch: str):
    """The model (eval mode, float32), training and test tuples, the few layers tested."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=N_CLASSES).eval()
    x = torch.randn(N_TRAIN + N_TEST, 3, 32, 32)
    y = torch.arange(N_TRAIN + N_TEST) % N_CLASSES
    modules = dict(model.named_modules())
    conv = next(n for n, m in modules.items() if isinstance(m, nn.Conv2d))
    norm = next(n for n, m in modules.items() if isinstance(m, nn.BatchNorm2d))
    linear = [n for n, m in modules.items() if isinstance(m, nn.Linear)][-1]
    return model, (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:]), [conv, norm, linear]


@pytest.mark.parametrize("arch", _params())
def test_default_methods_on_three_layers(arch):
    model, train, test, layers = build(arch)
    li = LayerInfluence(model, train, layers=layers, batch_size=N_TRAIN)
    assert set(li.strategies) == {*layers, Scope.GLOBAL}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = li.influence(test)
        top = li.influence(test, k=2)
        selfi = li.self_influence()
        report = li.check(test, warn_below=-1.0)
    assert scores.shape == (3, N_TEST, N_TRAIN) and torch.isfinite(scores).all()
    assert top.indices.shape == (3, N_TEST, 2)
    best = scores.topk(2, dim=-1).values  # values: ties may order indices either way
    assert torch.allclose(
        top.influence_scores, best, rtol=1e-5, atol=1e-6 * float(best.abs().max())
    )
    assert selfi.shape == (3, N_TRAIN) and torch.isfinite(selfi).all()
    assert report.pearson.shape == (3,) and torch.isfinite(report.pearson).all()
    # Small exact layers are their own reference; the others are checked against it.
    for name, p, ref in zip(layers, report.pearson.tolist(), report.references, strict=True):
        small = sum(q.numel() for q in model.get_submodule(name).parameters()) <= 4096
        if li.strategies[name][0] in ("exact", "gauss-newton") and small:
            assert ref == "itself" and p == 1.0, (name, p, ref)
        else:
            assert ref in ("gauss-newton", "exact", "cg"), (name, ref)


@pytest.mark.parametrize("arch", _params())
def test_auto_agrees_with_cg_on_small_layers(arch):
    """Small layers are exact (the Hessian, as CG solves it), or, where curved beyond the
    budget, their Gauss-Newton block (as CG solves that: `hessian="gauss-newton"` here)."""
    model, train, test, layers = build(arch)
    small = [
        n for n in layers if sum(p.numel() for p in model.get_submodule(n).parameters()) < 4096
    ]
    kw = dict(layers=small, batch_size=N_TRAIN, damping=0.1)
    auto = LayerInfluence(model, train, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = auto.influence(test)
        chosen = [auto.strategies[n][0] for n in small]
        assert set(chosen) <= {"exact", "gauss-newton"}
        want = {"exact": LayerInfluence(model, train, hessian="cg", **kw).influence(test)}
        if "gauss-newton" in chosen:
            gn = LayerInfluence(model, train, hessian="gauss-newton", **kw)
            want["gauss-newton"] = gn.influence(test)
    for row, name in enumerate(chosen):
        c = want[name][row]
        assert torch.allclose(a[row], c, rtol=1e-3, atol=1e-3 * float(c.abs().max())), small[row]


@pytest.mark.zoo
@pytest.mark.parametrize("arch", ARCHS)
def test_full_default_call(arch):
    """Every layer with the default strategy: no MemoryError, finite scores, a cheap check."""
    model, train, test, _ = build(arch)
    li = LayerInfluence(model, train, batch_size=N_TRAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = li.influence(test)
        glob = li.global_influence(test)
        report = li.check(test, warn_below=-1.0)
    n = len(li.layer_names)
    assert scores.shape == (n, N_TEST, N_TRAIN) and torch.isfinite(scores).all()
    assert glob.shape == (N_TEST, N_TRAIN) and torch.isfinite(glob).all()
    assert li.strategies[Scope.GLOBAL][0] == "block-diagonal"
    # Block-diagonal over every trainable module: the sum of the layers' scores.
    assert torch.allclose(
        glob, scores.sum(0).to(glob.dtype), rtol=1e-4, atol=1e-4 * float(glob.abs().max())
    )
    assert report.pearson.shape == (n,) and not torch.isnan(report.pearson).all()


STRATEGIES = [s for s in available_strategies() if s not in ("auto", "tracin", "captum", "lissa")]


@pytest.mark.zoo
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_strategy_on_three_layers(arch, strategy):
    model, train, test, layers = build(arch)
    li = LayerInfluence(
        model, train, layers=layers, batch_size=N_TRAIN, hessian=strategy, damping=0.1
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scores = li.influence(test)
        except MemoryError:
            pytest.skip(f"{strategy!r} refuses a block of this model as too large (by design)")
    assert scores.shape == (3, N_TEST, N_TRAIN) and torch.isfinite(scores).all()


@pytest.mark.parametrize("arch", _params())
def test_the_graph_finds_the_blocks_the_probe_finds_curved(arch):
    """The flat blocks read from the autograd graph are those the probe measures flat (on
    up to 8 small modules spread over the network: SiLU, hardswish, squeeze-excitation,
    channel shuffles, dense concatenations)."""
    from captum_layerinf._utils.losses import ExampleLoss
    from captum_layerinf.influence._gradients import GradientEngine
    from captum_layerinf.influence._linearity import curving_ops
    from captum_layerinf.influence.strategies import ExactSettings

    model, train, _, _ = build(arch)
    params = dict(model.named_parameters())
    owned: dict[str, list[str]] = {}
    for name in params:
        owned.setdefault(name.rpartition(".")[0], []).append(name)
    small = [b for b in owned.values() if sum(params[n].numel() for n in b) <= 4096]
    blocks = small[:: max(1, len(small) // 8)][:8]
    x, y = train[0][:2], train[1][:2]
    ops = curving_ops(model, params, (x[:1],), blocks)
    measured = GradientEngine(model, ExampleLoss()).curvature_residuals((x,), y, blocks)
    tol = ExactSettings().residual_tol
    assert [op is None for op in ops] == [r <= tol for r in measured], (ops, measured)
