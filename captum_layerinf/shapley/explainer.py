"""`BidirectionalExplainer`: SHAP maps of test images next to their influential training images."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, Dataset
from tqdm.auto import tqdm

from .._utils.data import as_dataloader, iter_batches
from .._utils.modules import evaluation_state, model_device
from ..influence import LayerInfluence
from . import _summary
from ._backends import BACKENDS, REGISTRY, _DeepUnsupported, instance_values
from .result import COMPOUND, BidirectionalResult

# Above this many bytes of float64 scores [n_layers, n_test, n_train], the top-k are
# collected while streaming over the training set (four passes) instead of from one
# dense score tensor (one pass).
DENSE_SCORES_BYTES = 256 * 2**20


class BidirectionalExplainer:
    """Explains a classifier's decision on an image from both sides.

    The test side: SHAP values of the image's pixels (Lundberg & Lee 2017) for the
    predicted and the true class. The training side: the top-k proponents and opponents
    per layer and for the compound score, from a `LayerInfluence` (Aamir et al. 2023,
    their Fig. 10 shows the two side by side).

    Args:
        model: The classifier, returning logits `[batch, n_classes]`; the same object as
            `layer_influence.model`.
        layer_influence: A `LayerInfluence` on `model` and its training set.
        shap_explainer: "gradient" (expected gradients, `shap.GradientExplainer`; any
            differentiable model), "deep" (DeepLIFT-SHAP, `shap.DeepExplainer`, exact
            additivity; run on a copy of the model without in-place activations; falls
            back to "gradient" with a warning where shap cannot handle the model: a module
            called twice per forward, functional `F.relu` / `F.max_pool2d`, unknown leaf
            modules), "partition" (Owen values on a pixel hierarchy,
            `shap.PartitionExplainer` with `shap.maskers.Image`; model-agnostic, slow), or
            an instance of a shap Explainer built on the model's logits over all classes
            (see `explain`).
        background: Reference inputs `[n_bg, *S]` (a tensor, a Dataset or a DataLoader of
            `(input, label)`, or a tuple `(inputs, labels)`) for "gradient" and "deep"; for
            "partition" their mean image fills masked pixels, or pass a shap masker
            string such as "blur(3,3)". Default: `n_background` training images drawn
            with `seed`.
        n_background: Size of the default background.
        nsamples: Samples per image for "gradient" (`nsamples` of shap), evaluations per
            image for "partition" (`max_evals`).
        seed: Seed of the background draw and of the "gradient" samples; the same seed
            gives the same result.
        batch_size: Batch size of shap's model evaluations.
        class_names: Names of the classes, stored in the result for plots.

    Examples:
        >>> li = LayerInfluence(model, train)
        >>> result = BidirectionalExplainer(model, li).explain((x_test, y_test), k=3)
        >>> result.shap_values.shape        # [n, 2, C, H, W]: predicted, true class
        >>> result.proponents.shape         # [n_layers + 1, n, 3]: layers, then compound
        >>> fig, axes = plot_bidirectional(result, 0)
    """

    def __init__(
        self,
        model: nn.Module,
        layer_influence: LayerInfluence,
        shap_explainer: str | Any = "gradient",
        background: Tensor | Dataset | DataLoader | tuple[Tensor, ...] | str | None = None,
        n_background: int = 50,
        nsamples: int = 200,
        seed: int = 0,
        batch_size: int = 50,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(layer_influence, LayerInfluence):
            raise TypeError(
                f"layer_influence must be a LayerInfluence; got {type(layer_influence).__name__}."
            )
        if layer_influence.model is not model:
            raise ValueError(
                "model is not the model of layer_influence: both sides must explain the same "
                "network. Pass `layer_influence.model`, or build the LayerInfluence on `model`."
            )
        if isinstance(shap_explainer, str):
            if shap_explainer not in BACKENDS:
                raise ValueError(
                    f"unknown shap_explainer {shap_explainer!r}; use one of {BACKENDS} or a shap "
                    "Explainer instance."
                )
        else:
            import shap

            if not isinstance(shap_explainer, shap.Explainer):
                raise TypeError(
                    "shap_explainer must be 'gradient', 'deep', 'partition' or a shap Explainer "
                    f"instance; got {type(shap_explainer).__name__}."
                )
        if isinstance(background, str) and shap_explainer != "partition":
            raise ValueError(
                f"background={background!r} (a masker string) works only with "
                "shap_explainer='partition'; pass reference inputs instead."
            )
        for name, value in (("n_background", n_background), ("nsamples", nsamples)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}.")
        self.model = model
        self.layer_influence = layer_influence
        self.shap_explainer = shap_explainer
        self.background = background
        self.n_background = n_background
        self.nsamples = nsamples
        self.seed = seed
        self.batch_size = batch_size
        self.class_names = list(class_names) if class_names is not None else None

    def explain(
        self,
        test_inputs: tuple[Tensor, ...] | DataLoader | Dataset,
        k: int = 3,
        masks: Tensor | None = None,
        explain_train: bool = False,
        show_progress: bool = False,
    ) -> BidirectionalResult:
        """SHAP values and layer-wise influential training images of test images.

        Args:
            test_inputs: `(images, labels)` with images `[n, *S]`, or a Dataset or
                non-shuffling DataLoader of such pairs (one input tensor per example).
            k: Proponents and opponents kept per layer and test image.
            masks: Optional foreground masks `[n, H, W]` (nonzero = object) for
                `foreground_share`.
            explain_train: Also compute the SHAP map of every training image in the
                result, for its own class (`train_shap_values`).
            show_progress: Show progress bars.

        Returns:
            A `BidirectionalResult` of CPU tensors (shapes documented there).

        A shap Explainer instance gets the test images (and training images) as tensors
        through `shap_values(x)` for GradientExplainer / DeepExplainer, and channel-last
        numpy images `[n, H, W, C]` through `explainer(x)` otherwise; it must return one
        map per class of the model (shap's trailing output dimension).
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int; got {k!r}.")
        li = self.layer_influence
        device = model_device(self.model)
        x, y = _stack(as_dataloader(test_inputs, li.batch_size, "test_inputs"), device)
        with evaluation_state(self.model):
            logits = _checked_logits(self.model, x, y, self.class_names)
            masks = _checked_masks(masks, x)
            n_train = _n_examples(li.train_dataloader)
            if k > n_train:
                raise ValueError(f"k={k} exceeds the number of training examples ({n_train}).")
            rows = _influential(li, (x, y), k, n_train, show_progress)
            train = self._training_images(rows, n_train, device)
            targets = torch.stack([logits.argmax(1), y], dim=1)
            n_classes = logits.shape[1]
            shap_values, backend = self._shap(
                self.shap_explainer, x, targets, train.background, n_classes, show_progress
            )
            train_shap = None
            if explain_train:  # with the backend that worked on the test images
                own = train.labels.unsqueeze(1)
                train_shap, _ = self._shap(
                    backend, train.inputs, own, train.background, n_classes, show_progress
                )
                train_shap = train_shap[:, 0].float().cpu()
        return self._result(
            (x, y, logits, masks), rows, n_train, train, shap_values, train_shap, backend, k
        )

    def _result(
        self,
        test: tuple[Tensor, Tensor, Tensor, Tensor | None],
        rows: dict[str, Tensor],
        n_train: int,
        train: _TrainingImages,
        shap_values: Tensor,
        train_shap: Tensor | None,
        backend: Any,
        k: int,
    ) -> BidirectionalResult:
        """Everything on the CPU, with the training images' labels and the summaries."""
        x, y, logits, masks = test
        predictions = logits.argmax(1).cpu()
        label_of = torch.full((n_train,), -1, dtype=torch.long)
        label_of[train.positions] = train.labels.cpu()
        pro_labels = label_of[rows["proponents"].cpu()]
        opp_labels = label_of[rows["opponents"].cpu()]
        summary = self._summaries(shap_values, masks, pro_labels, predictions)
        return BidirectionalResult(
            inputs=x.detach().cpu(),
            labels=y.cpu(),
            logits=logits.detach().cpu(),
            predictions=predictions,
            shap_values=shap_values.float().cpu(),
            layer_names=[*self.layer_influence.layer_names, COMPOUND],
            proponents=rows["proponents"].cpu(),
            proponent_scores=rows["proponent_scores"].cpu(),
            proponent_labels=pro_labels,
            opponents=rows["opponents"].cpu(),
            opponent_scores=rows["opponent_scores"].cpu(),
            opponent_labels=opp_labels,
            train_positions=train.positions,
            train_inputs=train.inputs.detach().cpu(),
            train_labels=train.labels.cpu(),
            train_shap_values=train_shap,
            masks=None if masks is None else masks.cpu(),
            class_names=self.class_names,
            settings=self._settings(backend, train.background, k),
            **summary,
        )

    def _settings(self, backend: Any, background: Tensor | str, k: int) -> dict[str, Any]:
        """How the result was made (saved with it)."""
        li = self.layer_influence
        return {
            "shap_explainer": backend if isinstance(backend, str) else type(backend).__name__,
            "nsamples": self.nsamples,
            "seed": self.seed,
            "k": k,
            "n_background": len(background) if isinstance(background, Tensor) else 0,
            "hessian": li.hessian if isinstance(li.hessian, str) else type(li.hessian).__name__,
            "damping": li.damping,
        }

    # ---------------------------------------------------------------- internals

    def _training_images(
        self, rows: dict[str, Tensor], n_train: int, device: torch.device
    ) -> _TrainingImages:
        """The training images the rows point to, and the background, in one data pass."""
        referenced = torch.cat([rows["proponents"].flatten(), rows["opponents"].flatten()])
        positions = referenced.cpu().unique()
        wanted = positions
        drawn = None
        if self.background is None:
            gen = torch.Generator().manual_seed(self.seed)
            take = min(self.n_background, n_train)
            drawn = torch.randperm(n_train, generator=gen)[:take].sort().values
            wanted = torch.cat([positions, drawn]).unique()
        inputs, labels = _gather(self.layer_influence.train_dataloader, wanted, device)
        keep = torch.searchsorted(wanted, positions)
        if drawn is not None:
            background: Tensor | str = inputs[torch.searchsorted(wanted, drawn)]
        elif isinstance(self.background, str):
            background = self.background
        else:
            background = _as_inputs(self.background, self.layer_influence.batch_size, device)
        return _TrainingImages(positions, inputs[keep], labels[keep], background)

    def _shap(
        self,
        backend: Any,
        x: Tensor,
        targets: Tensor,
        background: Tensor | str,
        n_classes: int,
        show_progress: bool,
    ) -> tuple[Tensor, Any]:
        """SHAP values `[n, m, *S]` for the classes `targets [n, m]`, and the backend used."""
        if not isinstance(backend, str):
            values = instance_values(backend, x, targets, n_classes)
            return values.movedim(-1, 1), backend
        if backend == "deep":
            try:
                return self._grouped("deep", x, targets, background, show_progress), backend
            except _DeepUnsupported as err:
                warnings.warn(
                    f"shap's DeepExplainer cannot explain this model exactly ({err}); using "
                    "shap_explainer='gradient' (expected gradients) instead.",
                    UserWarning,
                    stacklevel=3,
                )
                backend = "gradient"
        return self._grouped(backend, x, targets, background, show_progress), backend

    def _grouped(
        self, backend: str, x: Tensor, targets: Tensor, background: Any, show_progress: bool
    ) -> Tensor:
        """Runs a backend once per distinct set of target classes (usually 1 or 2 classes)."""
        fn = REGISTRY[backend]
        out = torch.zeros(*targets.shape, *x.shape[1:], dtype=torch.float64, device=x.device)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, row in enumerate(targets.tolist()):
            groups.setdefault(tuple(sorted(set(row))), []).append(i)
        for classes, members in tqdm(
            groups.items(), desc=f"SHAP ({backend})", disable=not show_progress, leave=False
        ):
            idx = torch.tensor(members, device=x.device)
            values = fn(
                self.model,
                background,
                x[idx],
                list(classes),
                nsamples=self.nsamples,
                seed=self.seed,
                batch_size=self.batch_size,
            ).to(x.device)
            for pos, (j, target_row) in enumerate(zip(members, targets[idx].tolist(), strict=True)):
                for slot, c in enumerate(target_row):
                    out[j, slot] = values[pos, ..., classes.index(c)]
        return out

    @staticmethod
    def _summaries(
        shap_values: Tensor, masks: Tensor | None, pro_labels: Tensor, predictions: Tensor
    ) -> dict[str, Tensor]:
        values = shap_values[:, 0].double().cpu()
        n = len(values)
        if values.dim() in (3, 4):
            mass = _summary.positive_mass(values)
            share = _summary.foreground_share(mass, None if masks is None else masks.cpu())
            spread = _summary.positive_spread(mass)
            area = _summary.positive_area(mass)
        else:
            share = spread = area = torch.full((n,), _summary.NAN, dtype=torch.float64)
        layer, prediction = _summary.agreement(pro_labels[:-1, :, 0], predictions)
        return {
            "foreground_share": share,
            "positive_spread": spread,
            "positive_area": area,
            "layer_agreement": layer,
            "prediction_agreement": prediction,
        }


@dataclass(frozen=True)
class _TrainingImages:
    """The training images a result shows, and the SHAP background.

    Attributes:
        positions: `[m]` positions in the training set, sorted.
        inputs: `[m, *S]` their inputs.
        labels: `[m]` their labels.
        background: The SHAP background (inputs, or a backend's name for it).
    """

    positions: Tensor
    inputs: Tensor
    labels: Tensor
    background: Tensor | str


def _stack(loader: DataLoader, device: torch.device) -> tuple[Tensor, Tensor]:
    xs, ys = [], []
    for inputs, labels in iter_batches(loader, device, "test_inputs"):
        if len(inputs) != 1:
            raise ValueError(
                f"test_inputs must hold one input tensor and the labels; got {len(inputs)} "
                "input tensors. Explain models with a single image input."
            )
        xs.append(inputs[0])
        ys.append(labels)
    return torch.cat(xs), torch.cat(ys).long()


def _as_inputs(data: Any, batch_size: int, device: torch.device) -> Tensor:
    """Background inputs from a tensor, a Dataset, a DataLoader or a tuple `(x, labels)`."""
    if isinstance(data, Tensor):
        return data.to(device)
    return _stack(as_dataloader(data, batch_size, "background"), device)[0]


def _checked_logits(
    model: nn.Module, x: Tensor, y: Tensor, class_names: Sequence[str] | None
) -> Tensor:
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(x):
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(
            f"the model must return logits [batch, n_classes]; got {shape} for a batch of "
            f"{len(x)}. Wrap it so that it returns one row of class scores per input."
        )
    n_classes = logits.shape[1]
    if class_names is not None and len(class_names) != n_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names but the model returns {n_classes} "
            "logits; pass one name per output."
        )
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(
            f"labels must lie in [0, {n_classes}) for a model with {n_classes} outputs; got "
            f"labels from {int(y.min())} to {int(y.max())}."
        )
    if (
        n_classes > 1
        and (logits >= 0).all()
        and torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-4)
    ):
        raise ValueError(
            "the model's outputs are probabilities (non-negative rows summing to 1); SHAP and "
            "influence need logits. Remove the final softmax."
        )
    return logits


def _checked_masks(masks: Tensor | None, x: Tensor) -> Tensor | None:
    if masks is None:
        return None
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a Tensor [n, H, W]; got {type(masks).__name__}.")
    expected = (len(x), *x.shape[-2:])
    if x.dim() != 4 or tuple(masks.shape) != expected:
        raise ValueError(
            f"masks must have shape [n, H, W] = {expected} for images {tuple(x.shape)}; got "
            f"{tuple(masks.shape)}."
        )
    return masks != 0


def _n_examples(loader: DataLoader) -> int:
    """Examples the loader yields per pass (counted by iterating when it has no length)."""
    if isinstance(loader.batch_sampler, BatchSampler):
        with contextlib.suppress(TypeError):
            return len(loader.batch_sampler.sampler)  # type: ignore[arg-type]
    return sum(len(batch[-1]) for batch in loader)


def _gather(loader: DataLoader, positions: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """Inputs and labels at sorted training positions, in one pass over the loader."""
    xs, ys = [], []
    offset = 0
    positions = positions.cpu()
    for inputs, labels in iter_batches(loader, torch.device("cpu"), "train_dataset"):
        n = len(labels)
        lo, hi = torch.searchsorted(positions, torch.tensor([offset, offset + n])).tolist()
        if hi > lo:
            rows = positions[lo:hi] - offset
            xs.append(inputs[0][rows])
            ys.append(labels[rows])
        offset += n
        if hi == len(positions):
            break
    if sum(len(t) for t in ys) != len(positions):
        raise ValueError(
            f"the training set yielded {offset} examples, fewer than expected; pass a "
            "Dataset or a DataLoader whose length matches what it yields."
        )
    return torch.cat(xs).to(device), torch.cat(ys).long().to(device)


def _influential(
    li: LayerInfluence, data: tuple[Tensor, Tensor], k: int, n_train: int, show_progress: bool
) -> dict[str, Tensor]:
    """Top-k proponents and opponents, `[n_layers + 1, n, k]`: layers, then compound."""
    n_bytes = 8 * len(li.layer_names) * len(data[1]) * n_train
    if n_bytes <= DENSE_SCORES_BYTES:
        scores = li.influence(data, show_progress=show_progress)
        scores = torch.cat([scores, scores.sum(0, keepdim=True)])
        pro = scores.topk(k, dim=-1, largest=True)
        opp = scores.topk(k, dim=-1, largest=False)
        return {
            "proponents": pro.indices,
            "proponent_scores": pro.values,
            "opponents": opp.indices,
            "opponent_scores": opp.values,
        }
    out = {}
    for name, largest in (("proponent", True), ("opponent", False)):
        layers = li.influence(data, k=k, proponents=largest, show_progress=show_progress)
        total = li.compound_influence(data, k=k, proponents=largest, show_progress=show_progress)
        out[f"{name}s"] = torch.cat([layers.indices, total.indices.unsqueeze(0)])
        out[f"{name}_scores"] = torch.cat(
            [layers.influence_scores, total.influence_scores.unsqueeze(0)]
        )
    return out
