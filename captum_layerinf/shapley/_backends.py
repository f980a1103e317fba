"""SHAP backends: one function per shap explainer, all returning `[n, *input, n_outputs]`.

Every backend explains only the logits it is asked for: the model is wrapped in
`_SelectedLogits`, so shap never differentiates the other classes (on ImageNet-sized
heads, explaining all outputs would cost 1000x).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

BACKENDS = ("gradient", "deep", "partition")


class _SelectedLogits(nn.Module):
    """`model(x)[:, columns]`, with `x` cast to the model's dtype.

    shap's GradientExplainer builds its interpolated samples in float32 whatever the
    model's dtype; the cast lets a float64 model be explained too.
    """

    def __init__(self, model: nn.Module, columns: Sequence[int]) -> None:
        super().__init__()
        self.model = model
        self.columns = list(columns)
        self.dtype = next((p.dtype for p in model.parameters()), torch.float32)

    def forward(self, x: Tensor) -> Tensor:
        """Selected logits `[batch, len(columns)]`."""
        return self.model(x.to(self.dtype))[:, self.columns]


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seeds numpy's global generator (shap draws from it) and restores it afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _trailing(values: Any, shape: Sequence[int], n_outputs: int) -> Tensor:
    """Shap's output as `Tensor [*shape, n_outputs]` (the shap >= 0.45 layout).

    A single-output explainer may drop the output dimension; it is put back.
    """
    arr = np.asarray(values)
    if n_outputs == 1 and tuple(arr.shape) == tuple(shape):
        arr = arr[..., None]
    if tuple(arr.shape) != (*shape, n_outputs):
        raise ValueError(
            f"the shap explainer returned values of shape {arr.shape}; expected "
            f"{(*shape, n_outputs)}: inputs {tuple(shape)} and a trailing output dimension "
            f"of {n_outputs} (shap >= 0.45). Build it on the model's logits over all classes."
        )
    return torch.from_numpy(np.ascontiguousarray(arr))


def gradient_values(
    model: nn.Module,
    background: Tensor,
    x: Tensor,
    columns: Sequence[int],
    nsamples: int,
    seed: int,
    batch_size: int,
) -> Tensor:
    """Expected gradients (shap.GradientExplainer) of the selected logits.

    Returns:
        `Tensor [n, *x.shape[1:], len(columns)]` (float64).
    """
    import shap

    explainer = shap.GradientExplainer(
        _SelectedLogits(model, columns), background, batch_size=batch_size
    )
    with _numpy_seed(seed):
        values = explainer.shap_values(x, nsamples=nsamples, rseed=seed)
    return _trailing(values, x.shape, len(columns)).double()


def deep_values(
    model: nn.Module, background: Tensor, x: Tensor, columns: Sequence[int], **_: Any
) -> Tensor:
    """DeepLIFT-SHAP (shap.DeepExplainer) of the selected logits, on a copy of the model.

    Returns:
        `Tensor [n, *x.shape[1:], len(columns)]` (float64). Raises `_DeepUnsupported` when
        the model cannot be explained exactly (the caller falls back to expected gradients).
    """
    import shap

    clean = deep_ready_copy(model, x[:1])
    explainer = shap.DeepExplainer(_SelectedLogits(clean, columns), background)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            values = explainer.shap_values(x, check_additivity=True)
        except AssertionError as err:
            raise _DeepUnsupported(
                "its DeepLIFT multipliers do not sum to the model output (functional "
                "F.relu / F.max_pool2d or another op that shap's DeepExplainer does not "
                f"handle): {str(err).split('.')[0]}"
            ) from err
    unknown = sorted({str(w.message) for w in caught if "unrecognized nn.Module" in str(w.message)})
    if unknown:
        raise _DeepUnsupported("; ".join(unknown))
    return _trailing(values, x.shape, len(columns)).double()


class _DeepUnsupported(RuntimeError):
    """The model has an op that shap's DeepExplainer cannot attribute exactly."""


def deep_ready_copy(model: nn.Module, example: Tensor) -> nn.Module:
    """A deep copy of `model` without in-place activations; refuses reused modules.

    shap's DeepExplainer stores each leaf module's input and output on the module
    itself: an in-place ReLU overwrites the stored input, and a module called twice
    in one forward pass (torchvision ResNet's `self.relu`) keeps only the last call.

    Raises:
        _DeepUnsupported: A leaf module is called more than once per forward pass.
    """
    clean = copy.deepcopy(model)
    for module in clean.modules():
        if getattr(module, "inplace", False) is True:
            # nn.Module types unknown attributes as Tensor | Module
            setattr(module, "inplace", False)  # noqa: B010
    calls: dict[str, int] = {}
    handles = []
    try:
        for name, module in clean.named_modules():
            if not list(module.children()):
                handles.append(
                    module.register_forward_hook(
                        lambda *_, name=name: calls.__setitem__(name, calls.get(name, 0) + 1)
                    )
                )
        with torch.no_grad():
            clean(example.to(next((p.dtype for p in clean.parameters()), example.dtype)))
    finally:
        for handle in handles:
            handle.remove()
    reused = sorted(name for name, n in calls.items() if n > 1)
    if reused:
        raise _DeepUnsupported(
            f"module(s) {reused} are called more than once per forward pass; give each call "
            "its own module"
        )
    return clean


def partition_values(
    model: nn.Module,
    background: Tensor | str,
    x: Tensor,
    columns: Sequence[int],
    nsamples: int,
    batch_size: int,
    **_: Any,
) -> Tensor:
    """Owen values over a pixel hierarchy (shap.PartitionExplainer + shap.maskers.Image).

    The first call in a process compiles shap's numba kernels (about 10-30 s).

    Args:
        model: The classifier.
        background: An image `[C, H, W]` (or a batch, averaged) that fills masked pixels,
            or one of shap's masker strings ("blur(k,k)", "inpaint_telea", "inpaint_ns").
        x: Images `[n, C, H, W]`.
        columns: The logits to explain.
        nsamples: Model evaluations per image (shap's `max_evals`).
        batch_size: Images per model call.

    Returns:
        `Tensor [n, *x.shape[1:], len(columns)]` (float64).
    """
    import shap

    if x.dim() != 4:
        raise ValueError(f'"partition" explains images [n, C, H, W]; got {tuple(x.shape)}.')
    wrapped = _SelectedLogits(model, columns)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    c, h, w = x.shape[1:]

    def f(images: np.ndarray) -> np.ndarray:
        batch = torch.as_tensor(images, dtype=x.dtype, device=device).permute(0, 3, 1, 2)
        with torch.no_grad():
            return wrapped(batch).double().cpu().numpy()

    if isinstance(background, Tensor):
        fill = background.mean(0) if background.dim() == 4 else background
        mask_value: Any = fill.permute(1, 2, 0).double().cpu().numpy()
    else:
        mask_value = background
    masker = shap.maskers.Image(mask_value, shape=(h, w, c))
    # Identity link: the logits are explained as they are (looked up at call time).
    explainer = shap.PartitionExplainer(f, masker, link=shap.links.identity)
    hwc = x.permute(0, 2, 3, 1).cpu().numpy()
    explanation = explainer(hwc, max_evals=nsamples, batch_size=batch_size, silent=True)
    values = _trailing(explanation.values, hwc.shape, len(columns))  # [n, H, W, C, out]
    return values.permute(0, 3, 1, 2, 4).double()


def instance_values(
    explainer: Any, x: Tensor, columns_per_row: Tensor, n_classes: int, **_: Any
) -> Tensor:
    """Values from a user's shap explainer, for the classes `columns_per_row [n, m]`.

    GradientExplainer / DeepExplainer instances get `shap_values(x)` with tensors in
    the model's layout; any other shap Explainer gets `explainer(x)` with images
    channel-last (numpy `[n, H, W, C]`, shap's image-masker layout) and its values are
    turned back to `[n, C, H, W]`. The explainer must cover all `n_classes` outputs.

    Returns:
        `Tensor [n, *x.shape[1:], m]` (float64).
    """
    import shap

    if isinstance(explainer, (shap.GradientExplainer, shap.DeepExplainer)):
        raw = _trailing(explainer.shap_values(x), x.shape, n_classes)
    elif x.dim() == 4:
        hwc = x.permute(0, 2, 3, 1).cpu().numpy()
        out = explainer(hwc)
        raw = _trailing(getattr(out, "values", out), hwc.shape, n_classes).permute(0, 3, 1, 2, 4)
    else:
        out = explainer(x.cpu().numpy())
        raw = _trailing(getattr(out, "values", out), x.shape, n_classes)
    index = columns_per_row.cpu().long().view(len(x), *([1] * (x.dim() - 1)), -1)
    return raw.double().gather(-1, index.expand(*x.shape, index.shape[-1]))


BackendFn = Callable[..., Tensor]
REGISTRY: dict[str, BackendFn] = {
    "gradient": gradient_values,
    "deep": deep_values,
    "partition": partition_values,
}
