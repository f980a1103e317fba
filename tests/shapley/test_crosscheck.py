"""shap's GradientExplainer and Captum's GradientShap estimate the same expected gradients.

Both are Monte-Carlo means of one integrand (Erion et al. 2021, "expected gradients"):

    φ_i(x) = E_{x' ~ background, α ~ U(0, 1)} [ (x_i − x'_i) ∂f/∂x_i (x' + α (x − x')) ]

shap draws N_s samples, Captum (stdevs=0) N_c. If they estimate the same φ, per feature
the difference of the two means has standard deviation σ_i √(1/N_s + 1/N_c), σ_i² being
the variance of the integrand (shap returns σ_i² / √N_s with `return_variances=True`).
So z_i = Δ_i / (σ_i √(1/N_s + 1/N_c)) is ≈ N(0, 1) for every pixel (CLT, N = 1000):

- max |z_i| < 6 over ~100 pixels (each exceeds 6 with probability 2e-9 under N(0, 1));
- mean z_i² < 3 (it is 1 in expectation; a different estimand — a missing (x − x')
  factor, a flipped sign, another baseline distribution — gives values in the hundreds).

Pixels where the integrand is identically zero (σ = 0: the digits' empty border, where
every image and background is 0) must be 0 on both sides.
"""

import numpy as np
import torch
from captum.attr import GradientShap

from captum_layerinf.shapley._backends import _numpy_seed, _SelectedLogits

N = 1000


def test_shap_gradient_explainer_agrees_with_captum_gradient_shap(digits, background):
    import shap

    model, _, _, test = digits
    x = test[:][0][:2]
    with torch.no_grad():
        targets = model(x).argmax(1)
    z, zero_pixels = [], 0
    for i, c in enumerate(targets.tolist()):
        xi = x[i : i + 1]
        explainer = shap.GradientExplainer(_SelectedLogits(model, [c]), background, batch_size=100)
        with _numpy_seed(0):
            phi, var = explainer.shap_values(xi, nsamples=N, rseed=0, return_variances=True)
        ours = torch.from_numpy(np.asarray(phi)[..., 0]).double()
        sigma2 = torch.from_numpy(np.asarray(var[0])).double() * N**0.5
        with _numpy_seed(1):
            torch.manual_seed(1)
            theirs = GradientShap(model).attribute(
                xi, baselines=background, target=c, n_samples=N, stdevs=0.0
            )
        theirs = theirs.double()
        sigma = (sigma2 * (2.0 / N)).sqrt()
        live = sigma > 1e-9
        assert torch.all(ours[~live].abs() < 1e-9) and torch.all(theirs[~live].abs() < 1e-9)
        zero_pixels += int((~live).sum())
        z.append(((ours - theirs)[live] / sigma[live]).flatten())
    z = torch.cat(z)
    assert len(z) > 80 and zero_pixels > 0
    assert z.abs().max() < 6, f"max |z| = {z.abs().max():.2f}"
    assert (z**2).mean() < 3, f"mean z^2 = {(z**2).mean():.2f}"
    print(f"mean z^2 = {(z**2).mean():.3f}, max |z| = {z.abs().max():.2f}, n = {len(z)}")
