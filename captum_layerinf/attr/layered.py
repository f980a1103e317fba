"""`LayeredExplanation`: Ho's layered explanations in Captum's attribution style."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import InternalInfluence, LayerConductance
from torch import Tensor, nn

from .._utils.modules import evaluation_state, forward_order, model_device, resolve_layers
from ._projection import deconv_projection, layer_output, layer_outputs, unit_seeds
from ._selection import STATISTICS
from .mim import Alpha, monotone_influence

MEASURES = ("mim", "internal_influence", "conductance", "activation")


@dataclass(frozen=True)
class LayeredExplanationResult:
    """What `LayeredExplanation.attribute` found for a batch of B inputs.

    Attributes:
        layer_names: The candidate layers, in forward order.
        unit_scores: Influence of every unit, per layer: `{name: Tensor [B, *unit_shape]}`.
        layer_statistic: Selection statistic of each layer's absolute unit scores,
            `Tensor [n_layers, B]` (rows in `layer_names` order).
        best_layer: Per input, the chosen layer (the statistic's argmax, or the forced one).
        top_units: `Tensor [B, k]`: flat indices into the best layer's output, by
            decreasing absolute score (Ho sorts by absolute value).
        top_scores: `Tensor [B, k]`: the signed scores of those units.
        projections: `Tensor [B, k, *input_shape]`: DeconvNet image of each top unit alone.
        joint_projection: `Tensor [B, *input_shape]`: DeconvNet image of the k units
            together (every other unit of the layer set to zero; Ho's Fig. 2).
        target: `Tensor [B]`: the explained class per input.
        measure: The unit-influence measure used.
        statistic: The layer-selection statistic used.
    """

    layer_names: list[str]
    unit_scores: dict[str, Tensor]
    layer_statistic: Tensor
    best_layer: list[str]
    top_units: Tensor
    top_scores: Tensor
    projections: Tensor
    joint_projection: Tensor
    target: Tensor
    measure: str
    statistic: str

    def layer_ranking(self, index: int = 0) -> list[str]:
        """Layer names of input `index`, most influential first (by the statistic)."""
        order = self.layer_statistic[:, index].argsort(descending=True, stable=True)
        return [self.layer_names[i] for i in order.tolist()]

    def unit_coordinates(self, index: int = 0) -> list[tuple[int, ...]]:
        """Top units of input `index` as coordinates in the best layer's output shape."""
        shape = self.unit_scores[self.best_layer[index]].shape[1:]
        coords = torch.unravel_index(self.top_units[index], shape)
        return [tuple(int(c[j]) for c in coords) for j in range(self.top_units.shape[1])]


class LayeredExplanation:
    r"""Layered explanations (Ho): the most influential layer, its top units, their images.

    Three steps per input x and target class t:

    1. **Influence of every unit** of every candidate layer, by `measure`:

       - `"mim"` (Ho's choice): the monotone influence measure of Sliwinski, Strobel &
         Zick on the layer's activations, φ(x) = Σ_{y: c(y) ≠ c(x)} α(‖a(x) − a(y)‖)
         (a(x) − a(y)) over a labelled `reference` set, one class against the rest (see
         `monotone_influence` for the exact formula, its source and what is ours). The
         reference labels are the classifier's predictions unless given.
       - `"internal_influence"`: Captum's `InternalInfluence` (gradient of the class
         score with respect to the unit, integrated along the straight path from
         `baselines` to x).
       - `"conductance"`: Captum's `LayerConductance` (the unit's share of Integrated
         Gradients; a layer's conductances sum to the score difference to the baseline).
       - `"activation"`: the unit's activation (Ho's "Max" baseline).

    2. **The most influential layer**: the layer whose units' absolute influences differ most,
       measured by `statistic`: `"gini"` (default), the Gini coefficient of the absolute scores
       of the layer's units (0: all units alike; → 1: one unit carries everything;
       scale-free, and near its maximum whatever the layer's width), or `"cv"`, std / mean
       of the absolute scores (grows with the width). Ho argues the output layer is influential
       by definition and uninformative ("a dog because it's a dog"): the default
       candidates are every module owning parameters except the last one. With the
       gradient measures, units that a following max-pool discards (or an inactive ReLU
       blocks) get exactly zero, which by itself raises a layer's Gini coefficient: on
       the digits CNN they always pick a convolution that feeds a max-pool.

    3. **Top-k units of that layer, projected to the input** with DeconvNet (Zeiler &
       Fergus 2014) as Captum's `Deconvolution` implements it (ReLU backward replaced by
       a ReLU of the incoming signal; transposed convolutions; max-pool switches),
       started from one unit at a time with every other unit of the layer set to zero.
       The seed is the unit's raw activation (`seed="activation"`, as in DeconvNet and
       Ho's "backpropagate their raw values") or 1 (`seed="one"`).

    Args:
        model: A classifier returning logits `[batch, classes]`; its ReLUs must be
            `nn.ReLU` modules (Captum's `Deconvolution` hooks them). Evaluated in eval mode
            (a model in training mode is switched, with a warning, and restored).
        layers: Dotted module names (`model.named_modules()`), any modules whose output is
            a tensor (conv, ReLU, pooling, linear...). Default: every module owning
            trainable parameters except the last in forward order (for `DigitsVGG`:
            `features.0, .2, .5, .7, classifier.0`), the names `LayerInfluence` uses.
        measure: `"mim"`, `"internal_influence"`, `"conductance"` or `"activation"`.
        reference: For `"mim"`: reference inputs `[N, *input_shape]`, or a tuple
            `(inputs, labels)` (Captum's convention); without labels the model's
            predictions label them. The activations of every candidate layer are computed
            once and kept (`N × units` numbers per layer).
        alpha: For `"mim"`: the distance weight α, a power p (α(r) = r⁻ᵖ) or a callable.
        statistic: `"gini"` or `"cv"`, the layer-selection statistic.
        baselines: For `"internal_influence"` / `"conductance"`: Captum baselines
            (default zeros).
        n_steps: Integration steps of those two.
        batch_size: Batch size for the reference activations and Captum's internal batches.

    Examples:
        >>> le = LayeredExplanation(model, reference=train_images)      # MIM
        >>> res = le.attribute(x, k=4)          # target: the predicted class
        >>> res.best_layer, res.top_units.shape, res.projections.shape
        (['features.5', ...], torch.Size([B, 4]), torch.Size([B, 4, 1, 8, 8]))
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        measure: str = "mim",
        reference: Tensor | tuple[Tensor, ...] | None = None,
        alpha: Alpha = 1.0,
        statistic: str = "gini",
        baselines: Any = None,
        n_steps: int = 50,
        batch_size: int = 64,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}.")
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; choose one of {', '.join(MEASURES)}.")
        if statistic not in STATISTICS:
            raise ValueError(
                f"unknown statistic {statistic!r}; choose one of {', '.join(STATISTICS)}."
            )
        if measure == "mim" and reference is None:
            raise ValueError(
                "measure='mim' needs a labelled reference set: pass reference=inputs or "
                "reference=(inputs, labels), e.g. the training images."
            )
        self.model = model
        self.measure = measure
        self.alpha = alpha
        self.statistic = statistic
        self.baselines = baselines
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.device = model_device(model)
        self._layers_arg = None if layers is None else _check_names(model, layers)
        self._reference = _split_reference(reference) if reference is not None else None
        self._layer_names: list[str] | None = None
        self._ref_cache: tuple[dict[str, Tensor], Tensor] | None = None

    # ---------------------------------------------------------------- public API

    @property
    def layer_names(self) -> list[str]:
        """Candidate layers in forward order (resolved on the first call for the default)."""
        if self._layer_names is None:
            if self._reference is None:
                raise RuntimeError(
                    "the default layers are ordered by a forward pass: call attribute() first "
                    "or pass layers= explicitly."
                )
            self._resolve(self._reference[0][:1].to(self.device))
        return list(self._layer_names or [])

    def attribute(
        self,
        inputs: Tensor,
        target: int | Sequence[int] | Tensor | None = None,
        k: int = 5,
        layer: str | None = None,
        seed: str = "activation",
    ) -> LayeredExplanationResult:
        """Ho's three steps for a batch: unit influences, best layer, projected top units.

        Args:
            inputs: Images `[B, *input_shape]`.
            target: Class to explain per input (int, list or `[B]`); default the
                model's prediction, the label Ho explains.
            k: Number of top units per input.
            layer: Force this layer for every input instead of the statistic's choice
                (e.g. to compare layers, as in Ho's Fig. 2). Must be a candidate layer.
            seed: "activation" (the unit's raw value) or "one": DeconvNet's seed.

        Returns:
            A `LayeredExplanationResult`.
        """
        if seed not in ("activation", "one"):
            raise ValueError(f"seed must be 'activation' or 'one'; got {seed!r}.")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int; got {k!r}.")
        inputs = _check_inputs(inputs, self.device)
        with evaluation_state(self.model):
            target = self._target(inputs, target)
            scores = self._unit_influence(inputs, target)
            names = list(scores)
            stats, best = self._best_layers(scores, layer, len(inputs))
            _check_units(scores, best, k)
            top_units, top_scores, projections, joint = self._top_units(
                inputs, scores, best, k, seed
            )
        return LayeredExplanationResult(
            layer_names=names,
            unit_scores=scores,
            layer_statistic=stats.cpu(),
            best_layer=best,
            top_units=top_units,
            top_scores=top_scores,
            projections=projections,
            joint_projection=joint,
            target=target,
            measure=self.measure,
            statistic=self.statistic,
        )

    def _best_layers(
        self, scores: dict[str, Tensor], layer: str | None, n: int
    ) -> tuple[Tensor, list[str]]:
        """The layer statistic `[n_layers, n]` and each input's chosen (or forced) layer."""
        names = list(scores)
        if layer is not None and layer not in scores:
            raise ValueError(
                f"layer {layer!r} is not a candidate layer; candidates: "
                f"{', '.join(repr(n) for n in names)}."
            )
        stat_fn = STATISTICS[self.statistic]
        stats = torch.stack([stat_fn(scores[n].flatten(1).abs()) for n in names])
        best_idx = (
            torch.full((n,), names.index(layer)) if layer is not None else stats.argmax(0).cpu()
        )
        return stats, [names[i] for i in best_idx.tolist()]

    def _top_units(
        self, inputs: Tensor, scores: dict[str, Tensor], best: list[str], k: int, seed: str
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Top-k units of each input's layer, their scores, projections and joint image."""
        n = inputs.shape[0]
        top_units = torch.empty(n, k, dtype=torch.long, device=inputs.device)
        top_scores = torch.empty(n, k, dtype=inputs.dtype, device=inputs.device)
        projections = inputs.new_empty(n, k, *inputs.shape[1:])
        joint = torch.empty_like(inputs)
        modules = dict(self.model.named_modules())
        for name in dict.fromkeys(best):
            rows = torch.tensor([i for i, b in enumerate(best) if b == name], device=inputs.device)
            flat = scores[name][rows].flatten(1)
            units = flat.abs().topk(k, dim=1).indices
            top_units[rows] = units
            top_scores[rows] = flat.gather(1, units).to(inputs.dtype)
            proj, jnt = self._project(inputs[rows], modules[name], units, seed)
            projections[rows] = proj.to(projections.dtype)
            joint[rows] = jnt
        return top_units, top_scores, projections, joint

    def unit_influence(
        self, inputs: Tensor, target: int | Sequence[int] | Tensor | None = None
    ) -> dict[str, Tensor]:
        """Influence of every unit of every candidate layer.

        Args:
            inputs: Images `[B, *input_shape]`.
            target: Class per input; default the model's prediction.

        Returns:
            A dict from layer name to `Tensor [B, *unit_shape]`, in forward order.
        """
        inputs = _check_inputs(inputs, self.device)
        with evaluation_state(self.model):
            return self._unit_influence(inputs, self._target(inputs, target))

    def project(
        self, inputs: Tensor, layer: str, units: Tensor, seed: str = "activation"
    ) -> Tensor:
        """DeconvNet image of single units: Captum's `Deconvolution` restricted to each unit.

        Args:
            inputs: Images `[B, *input_shape]`.
            layer: Dotted name of any module of the model.
            units: `[B, k]` flat indices into that module's output (per example).
            seed: "activation" (the unit's raw value) or "one".

        Returns:
            `Tensor [B, k, *input_shape]`.
        """
        inputs = _check_inputs(inputs, self.device)
        module = dict(self.model.named_modules()).get(layer)
        if module is None or layer == "":
            _check_names(self.model, [layer])
        assert module is not None  # _check_names raised otherwise
        units = torch.as_tensor(units, device=inputs.device).long()
        if units.dim() != 2 or units.shape[0] != inputs.shape[0]:
            raise ValueError(
                f"units must be [B, k] with B = {inputs.shape[0]}; got {tuple(units.shape)}."
            )
        with evaluation_state(self.model):
            return self._project(inputs, module, units, seed)[0]

    # ---------------------------------------------------------------- internals

    def _resolve(self, example: Tensor) -> list[str]:
        if self._layer_names is None:
            if self._layers_arg is not None:
                order = forward_order(self.model, self._layers_arg, (example,))
                uncalled = [n for n in self._layers_arg if n not in order]
                if uncalled:
                    raise ValueError(f"layers {uncalled} are not called by the forward pass.")
                self._layer_names = order
            else:
                names = resolve_layers(self.model, None, (example,))
                if len(names) < 2:
                    raise ValueError(
                        f"the model has one parameterised layer ({names}); the default drops "
                        "the output layer, so name the layers to compare with layers=."
                    )
                self._layer_names = names[:-1]
        return self._layer_names

    def _target(self, inputs: Tensor, target: Any) -> Tensor:
        if target is None:
            with torch.no_grad():
                return self._predict(inputs)
        t = torch.as_tensor(target, device=inputs.device).long()
        if t.dim() == 0:
            t = t.expand(inputs.shape[0])
        if t.shape != (inputs.shape[0],):
            raise ValueError(
                f"target must be an int or one class per input ({inputs.shape[0]}); "
                f"got shape {tuple(t.shape)}."
            )
        return t.clone()

    def _predict(self, inputs: Tensor) -> Tensor:
        out = [
            self.model(inputs[s : s + self.batch_size]).argmax(1)
            for s in range(0, inputs.shape[0], self.batch_size)
        ]
        return torch.cat(out)

    def _unit_influence(self, inputs: Tensor, target: Tensor) -> dict[str, Tensor]:
        names = self._resolve(inputs[:1])
        modules = dict(self.model.named_modules())
        layers = {name: modules[name] for name in names}
        if self.measure in ("mim", "activation"):
            acts = layer_outputs(self.model, layers, inputs, self.batch_size)
            if self.measure == "activation":
                return acts
            ref_acts, ref_labels = self._reference_activations(layers)
            with torch.no_grad():
                predicted = self._predict(inputs)
            return {
                name: monotone_influence(
                    acts[name].flatten(1),
                    ref_acts[name].flatten(1),
                    predicted,
                    ref_labels,
                    target,
                    self.alpha,
                ).view_as(acts[name])
                for name in names
            }
        cls = InternalInfluence if self.measure == "internal_influence" else LayerConductance
        out = {}
        for name in names:
            attr = cls(self.model, layers[name]).attribute(
                inputs,
                baselines=self.baselines,
                target=target,
                n_steps=self.n_steps,
                internal_batch_size=self.batch_size * 8,
            )
            out[name] = attr.detach()
        return out

    def _reference_activations(
        self, layers: dict[str, nn.Module]
    ) -> tuple[dict[str, Tensor], Tensor]:
        if self._ref_cache is None:
            assert self._reference is not None
            ref_x, ref_y = self._reference
            ref_x = ref_x.to(self.device)
            with torch.no_grad():
                labels = self._predict(ref_x) if ref_y is None else ref_y.to(self.device)
            acts = layer_outputs(self.model, layers, ref_x, self.batch_size)
            self._ref_cache = (acts, labels)
        return self._ref_cache

    def _project(
        self, inputs: Tensor, module: nn.Module, units: Tensor, seed: str
    ) -> tuple[Tensor, Tensor]:
        if seed not in ("activation", "one"):
            raise ValueError(f"seed must be 'activation' or 'one'; got {seed!r}.")
        with torch.no_grad():
            acts = layer_output(self.model, module, inputs)
        n_units = acts[0].numel()
        if units.numel() and (units.min() < 0 or units.max() >= n_units):
            raise ValueError(
                f"unit indices must lie in [0, {n_units}); got {units.min()}..{units.max()}."
            )
        single, rows = unit_seeds(acts, units, seed, joint=False)
        proj = deconv_projection(self.model, module, inputs[rows], single)
        both, _ = unit_seeds(acts, units, seed, joint=True)
        joint = deconv_projection(self.model, module, inputs, both)
        return proj.view(*units.shape, *inputs.shape[1:]), joint


def _split_reference(reference: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
    if isinstance(reference, Tensor):
        return reference, None
    if isinstance(reference, (tuple, list)) and len(reference) == 2:
        x, y = reference
        if not isinstance(x, Tensor) or not isinstance(y, Tensor):
            raise TypeError("reference=(inputs, labels) must hold two tensors.")
        if y.shape != (x.shape[0],):
            raise ValueError(
                f"reference labels must be [N] with N = {x.shape[0]}; got {tuple(y.shape)}."
            )
        return x, y.long()
    raise TypeError(
        "reference must be a tensor of inputs [N, ...] or a tuple (inputs, labels); "
        f"got {type(reference).__name__}."
    )


def _check_names(model: nn.Module, layers: Sequence[str]) -> list[str]:
    if isinstance(layers, str):
        raise TypeError(f"layers must be a list of names, e.g. [{layers!r}]; got a string.")
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty; pass None for the default layers.")
    valid = [name for name, _ in model.named_modules() if name]
    for name in layers:
        if name not in valid:
            raise ValueError(
                f"unknown layer {name!r}. Valid layer names: {', '.join(repr(v) for v in valid)}."
            )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers contains duplicates: {layers}.")
    return layers


def _check_units(scores: dict[str, Tensor], best: list[str], k: int) -> None:
    """Refuses a k larger than a chosen layer's number of units."""
    too_small = [n for n in set(best) if scores[n][0].numel() < k]
    if too_small:
        raise ValueError(
            f"k={k} exceeds the number of units of layer(s) {too_small} "
            f"({[scores[n][0].numel() for n in too_small]}); use a smaller k."
        )


def _check_inputs(inputs: Any, device: torch.device) -> Tensor:
    if not isinstance(inputs, Tensor) or inputs.dim() < 2:
        raise TypeError(
            "inputs must be a tensor [B, *input_shape] with a batch dimension; got "
            f"{type(inputs).__name__} {tuple(getattr(inputs, 'shape', ()))}."
        )
    return inputs.to(device)
