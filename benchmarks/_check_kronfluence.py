"""Checks that `_kronfluence.kronfluence_layer_scores` is in captum-layerinf's convention,
then measures kronfluence EK-FAC's per-layer agreement with our exact strategy.

    python benchmarks/_check_kronfluence.py              # 1. identity, 2. logistic regression
    python benchmarks/_check_kronfluence.py --baseline   # 3. the digits CNN (600 x 40)
    python benchmarks/_check_kronfluence.py --all

1. kronfluence `strategy="identity"` == ours `hessian="identity"` (pins gradients: sign, scale).
2. One nn.Linear on the digits (float64, trained to convergence with a small L2): kronfluence
   EK-FAC vs ours `hessian="exact"` (for this model the Hessian = GGN = expected Fisher); at a
   damping that dominates the curvature both must tend to identity / λ, which pins λ as
   absolute and on the mean-loss scale.
3. Baseline: the benchmark digits CNN, all 6 layers, damping 1e-2, 1e-1, 1.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kronfluence import kronfluence_layer_scores  # noqa: E402

from captum_layerinf import LayerInfluence  # noqa: E402
from captum_layerinf.datasets import load_digits_split  # noqa: E402

CNN_LAYERS = [
    "features.0",
    "features.2",
    "features.5",
    "features.7",
    "classifier.0",
    "classifier.2",
]


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors' entries, in float64."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


def slope(kf: torch.Tensor, ours: torch.Tensor) -> float:
    """Least-squares scale s of `kf ≈ s * ours` (through the origin)."""
    kf, ours = kf.double().flatten(), ours.double().flatten()
    return float(kf @ ours / (ours @ ours))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def ours(model, train, test, layers, hessian, damping=1e-2) -> tuple[torch.Tensor, float]:
    """Our scores [n_layers, n_test, n_train] (float64) and seconds (constructor included)."""
    start = time.perf_counter()
    scores = LayerInfluence(model, train, layers=layers, hessian=hessian, damping=damping)
    scores = scores.influence(test.tensors)
    return scores.double(), time.perf_counter() - start


def check_identity() -> None:
    """kronfluence identity == ours identity on a small, briefly trained digits CNN."""
    from captum_layerinf.models import DigitsVGG
    from captum_layerinf.training import train_classifier

    torch.manual_seed(0)
    train, test = load_digits_split(80, 12, seed=1)
    model = train_classifier(DigitsVGG(), train, epochs=5, seed=0)
    ref, _ = ours(model, train, test, CNN_LAYERS, "identity")
    # A batch size that does not divide n: the last batch is ragged.
    kf, _ = kronfluence_layer_scores(
        model, train, test, CNN_LAYERS, 1e-2, "identity", batch_size=32
    )
    print("## 1. identity: kronfluence vs ours (DigitsVGG, 80 train x 12 test, float32)\n")
    print("| layer | rel. error | Pearson | scale |")
    print("|---|---:|---:|---:|")
    for name, a, b in zip(CNN_LAYERS, kf, ref, strict=True):
        print(f"| {name} | {rel_err(a, b):.1e} | {pearson(a, b):.8f} | {slope(a, b):.6f} |")
    print()


def logistic_regression(n_train: int = 500, n_test: int = 50, wd: float = 1e-3):
    """One float64 nn.Linear (64 -> 10) on the digits, L-BFGS to convergence (L2 `wd`)."""
    train, test = load_digits_split(n_train, n_test, seed=0, dtype=torch.float64)
    flat = [TensorDataset(d.tensors[0].flatten(1), d.tensors[1]) for d in (train, test)]
    torch.manual_seed(0)
    model = nn.Linear(64, 10).double()
    x, y = flat[0].tensors
    opt = torch.optim.LBFGS(
        model.parameters(), lr=1, max_iter=2000, tolerance_grad=1e-12, tolerance_change=0,
        history_size=50, line_search_fn="strong_wolfe",
    )  # fmt: skip

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss = loss + 0.5 * wd * sum((p**2).sum() for p in model.parameters())
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    grad = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    return model.eval(), flat[0], flat[1], float(grad)


def check_logistic() -> None:
    """kronfluence EK-FAC vs ours exact on multinomial logistic regression (float64)."""
    model, train, test, grad = logistic_regression()
    acc = (model(test.tensors[0]).argmax(1) == test.tensors[1]).double().mean()
    ident, _ = ours(model, train, test, [""], "identity")
    kf_id, _ = kronfluence_layer_scores(model, train, test, [""], 1.0, "identity")
    print(
        "## 2. logistic regression (nn.Linear 64->10, float64, 500 train x 50 test, L2 1e-3, "
        f"|grad| {grad:.1e}, test acc {acc:.0%})\n"
    )
    print(f"identity: kronfluence vs ours rel. error {rel_err(kf_id[0], ident[0]):.1e}\n")
    print("kf = kronfluence EK-FAC; slope = least-squares s in kf ≈ s·ours_exact.\n")
    print(
        "| damping | fisher | Pearson(kf, exact) | slope(kf, exact) | slope(exact, identity/λ) "
        "| slope(kf, identity/λ) | rel. err kf vs exact |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for damping in (1e-2, 1e-1, 1.0, 100.0):
        exact, _ = ours(model, train, test, [""], "exact", damping)
        for fisher in ("sampled", "expected", "empirical"):
            kf, _ = kronfluence_layer_scores(model, train, test, [""], damping, fisher=fisher)
            k, e, i = kf[0], exact[0], ident[0] / damping
            print(
                f"| {damping:g} | {fisher} | {pearson(k, e):.4f} | {slope(k, e):.4f} | "
                f"{slope(e, i):.4f} | {slope(k, i):.4f} | {rel_err(k, e):.1e} |"
            )
    print()


def check_ekfac_algebra(damping: float = 1e-2) -> None:
    """From kronfluence's own saved factors (logistic regression, expected Fisher): its Λ is
    diag(Qᵀ H Q) of OUR mean-loss Hessian, and its scores are g_testᵀ (Q (Λ + λ) Qᵀ)⁻¹ g_train
    with the absolute λ."""
    import tempfile

    from safetensors.torch import load_file

    model, train, test, _ = logistic_regression()
    with tempfile.TemporaryDirectory() as tmp:
        kf, _ = kronfluence_layer_scores(
            model, train, test, [""], damping, fisher="expected", workdir=tmp
        )
        fac = {
            name: load_file(f"{tmp}/layerinf/factors_ekfac/{name}.safetensors")["0"]
            for name in (
                "lambda_matrix",
                "num_lambda_processed",
                "activation_eigenvectors",
                "gradient_eigenvectors",
            )
        }
    lam = fac["lambda_matrix"] / fac["num_lambda_processed"]  # [out, in + 1]
    qa, qg = fac["activation_eigenvectors"], fac["gradient_eigenvectors"]

    def parts(data):
        x, y = data.tensors
        with torch.no_grad():
            p = torch.softmax(model(x), -1)
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1), p, y

    a, p, y = parts(train)
    # Our H (mean loss) = mean_i (ã ãᵀ) ⊗ (diag p - p pᵀ); its diagonal in the K-FAC basis:
    softmax_hess = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    diag = torch.einsum("jo,njk,ko,ni->oi", qg, softmax_hess, qg, (a @ qa) ** 2) / len(a)
    # Per-example gradients [n, out, in + 1] of the loss: (p - e_y) ã ᵀ.
    g_train = torch.einsum("no,ni->noi", p - nn.functional.one_hot(y, 10), a)
    at, pt, yt = parts(test)
    g_test = torch.einsum("no,ni->noi", pt - nn.functional.one_hot(yt, 10), at)
    pre = qg @ ((qg.T @ g_test @ qa) / (lam + damping)) @ qa.T
    manual = torch.einsum("koi,joi->kj", pre, g_train)
    # Dense check of the reference: our exact scores = a direct solve with that H.
    hess = torch.einsum("nop,ni,nj->oipj", softmax_hess, a, a).reshape(650, 650) / len(a)
    dense = g_test.flatten(1) @ torch.linalg.solve(
        hess + damping * torch.eye(650, dtype=hess.dtype), g_train.flatten(1).T
    )
    exact, _ = ours(model, train, test, [""], "exact", damping)
    print(f"## 2b. EK-FAC algebra from kronfluence's saved factors (λ = {damping:g})\n")
    print(f"- Λ / n vs diag(Qᵀ H_mean Q): rel. error {rel_err(lam, diag):.1e}")
    print(f"- scores vs g_testᵀ Q diag(1 / (Λ/n + λ)) Qᵀ g_train: {rel_err(kf[0], manual):.1e}")
    print(f"- ours exact vs a dense solve with H_mean: {rel_err(exact[0], dense):.1e}\n")


def baseline(fishers: tuple[str, ...] = ("sampled", "expected")) -> None:
    """kronfluence EK-FAC vs ours exact on the benchmark digits CNN (600 x 40, 6 layers)."""
    from _common import trained_digits

    model, train, test, _, acc = trained_digits(600, 40)
    print(f"## 3. baseline: digits CNN (test acc {acc:.1%}), 600 train x 40 test, 6 layers\n")
    rows, times = [], []
    for damping in (1e-2, 1e-1, 1.0):
        exact, t_ours = ours(model, train, test, CNN_LAYERS, "exact", damping)
        t_kf = {}
        for fisher in fishers:
            kf, t_kf[fisher] = kronfluence_layer_scores(
                model, train, test, CNN_LAYERS, damping, fisher=fisher
            )
            for name, a, b in zip(CNN_LAYERS, kf, exact, strict=True):
                rows.append((damping, fisher, name, pearson(a, b), slope(a, b)))
        times.append((damping, t_ours, t_kf))
    print("Pearson / slope (kronfluence EK-FAC vs ours exact, slope s: kf ≈ s·exact)\n")
    print("| damping | layer | " + " | ".join(f"{f} Pearson | {f} slope" for f in fishers) + " |")
    print("|---:|---|" + "---:|---:|" * len(fishers))
    for damping in (1e-2, 1e-1, 1.0):
        for name in CNN_LAYERS:
            cells = [
                f"{r[3]:.3f} | {r[4]:.2f}"
                for f in fishers
                for r in rows
                if r[0] == damping and r[1] == f and r[2] == name
            ]
            print(f"| {damping:g} | {name} | " + " | ".join(cells) + " |")
    print("\nseconds (kronfluence: factor fitting + scores; ours: constructor + influence)\n")
    print("| damping | ours exact | " + " | ".join(f"kronfluence {f}" for f in fishers) + " |")
    print("|---:|---:|" + "---:|" * len(fishers))
    for damping, t_ours, t_kf in times:
        cells = " | ".join(f"{t_kf[f]:.1f}" for f in fishers)
        print(f"| {damping:g} | {t_ours:.1f} | {cells} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="only the digits CNN baseline")
    parser.add_argument("--all", action="store_true", help="the checks and the baseline")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if not args.baseline:
        check_identity()
        check_logistic()
        check_ekfac_algebra()
    if args.baseline or args.all:
        baseline()


if __name__ == "__main__":
    main()
