"""The study's stages, in order: one compute function each, listed in `STAGE_REGISTRY`.

A stage function takes the `StudyRun` (configuration, output folder, the results of the
stages before it) and returns its frozen result (see `_results`). `DisturbanceStudy`
runs them in registry order and caches each on disk under its name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from ..influence import ExactSettings, LayerInfluence
from ..models import ShapesCNN, load_torchvision_model
from ..transforms import functional as F
from ._inputs import GLOBAL_LABELS, build_model, load_data, load_factory_model, source_keys
from ._results import (
    PAPER_VARIANTS,
    Data,
    GlobalInfluence,
    Influence,
    ModelState,
    Predictions,
    Shap,
    StageResult,
    Sweep,
    Variants,
)
from ._variants import VARIANTS, build_variants
from .config import StudyConfig


class StudyRun:
    """What a stage sees: the configuration, the output folder, the finished stages.

    Args:
        config: The run's configuration.
        out_dir: The run's folder.
    """

    def __init__(self, config: StudyConfig, out_dir: Path) -> None:
        self.config = config
        self.out_dir = out_dir
        self.results: dict[str, StageResult] = {}
        self._influence: LayerInfluence | None = None

    def _get(self, name: str, kind: type) -> Any:
        result = self.results[name]
        assert isinstance(result, kind), (name, type(result))
        return result

    @property
    def data(self) -> Data:
        """Stage "data"."""
        return self._get("data", Data)

    @property
    def variants(self) -> Variants:
        """Stage "variants"."""
        return self._get("variants", Variants)

    def train_set(self) -> TensorDataset:
        """The training images and labels as a dataset."""
        return TensorDataset(self.data.train_images, self.data.train_labels)

    def model(self) -> nn.Module:
        """A fresh instance of the explained model, with the stored weights, in eval mode."""
        cfg, n_classes = self.config, len(self.data.class_names)
        state = self._get("model", ModelState).state_dict
        if cfg.model == "shapes_cnn":
            model = ShapesCNN(width=cfg.width, n_classes=n_classes)
            model.load_state_dict(state)
            return model.eval()
        if ":" in cfg.model:
            return load_factory_model(cfg.model, state, n_classes)
        return load_torchvision_model(cfg.model, state, num_classes=n_classes)

    def layer_influence(self) -> LayerInfluence:
        """The layer-wise influence of the run (built once)."""
        if self._influence is None:
            self._influence = LayerInfluence(
                self.model(),
                self.train_set(),
                hessian=self.config.hessian,
                damping=self.config.damping,
            )
        return self._influence


def data_stage(run: StudyRun) -> Data:
    """Training and test data, test masks, class textures."""
    return load_data(run.config)


def model_stage(run: StudyRun) -> ModelState:
    """The model, trained here or loaded from local weights."""
    return ModelState(build_model(run.config, run.data).state_dict())


def variants_stage(run: StudyRun) -> Variants:
    """Every test image in every registered variant."""
    return build_variants(run.data, run.config)


def predictions_stage(run: StudyRun) -> Predictions:
    """Softmax outputs on the variants and on the class textures."""
    model = run.model()
    with torch.no_grad():
        return Predictions(
            probs=model(run.variants.images).softmax(1),
            texture_probs=model(run.data.textures).softmax(1),
        )


def influence_stage(run: StudyRun) -> Influence:
    """Layer-wise influence of every training image on every variant image."""
    li = run.layer_influence()
    v = run.variants
    scores = li.influence((v.images, v.labels), show_progress=run.config.show_progress)
    return Influence(scores, li.layer_names)


def global_stage(run: StudyRun) -> GlobalInfluence:
    """The all-parameter influence (Eq. 5) with the configured curvature."""
    cfg, v = run.config, run.variants
    if cfg.global_hessian == "none":
        return GlobalInfluence(torch.zeros(0), GLOBAL_LABELS["none"])
    hessian = {
        "gauss-newton": ExactSettings(gauss_newton="always"),
        "hessian": ExactSettings(gauss_newton="never"),
    }.get(cfg.global_hessian, cfg.global_hessian)
    li = LayerInfluence(run.model(), run.train_set(), hessian=hessian, damping=cfg.damping)
    return GlobalInfluence(
        li.global_influence((v.images, v.labels)), GLOBAL_LABELS[cfg.global_hessian]
    )


def shap_stage(run: StudyRun) -> Shap:
    """SHAP maps beside influential training images, for a few images of each variant."""
    from ..shapley import BidirectionalExplainer

    cfg, v = run.config, run.variants
    picks = first_per_variant(v.variants, len(v.names), cfg.shap_images)
    li = run.layer_influence()
    explainer = BidirectionalExplainer(
        li.model,
        li,
        shap_explainer=cfg.shap_explainer,
        n_background=min(cfg.shap_background, len(run.data.train_labels)),
        seed=cfg.seed,
        class_names=run.data.class_names,
    )
    result = explainer.explain(
        (v.images[picks], v.labels[picks]),
        k=cfg.top_k,
        masks=v.masks[picks],
        show_progress=cfg.show_progress,
    )
    path = run.out_dir / "stages" / "shap_result.pt"
    result.save(path)
    return Shap(picks, path.name)


def _sweep_one(run: StudyRun, model: nn.Module, i: int) -> tuple[Tensor, Tensor, Tensor]:
    """Images, probabilities and intra-class influence of one test image's sweep."""
    cfg, d = run.config, run.data
    label = int(d.test_labels[i])
    white = F.white_background(d.test_images[i], d.test_masks[i])
    texture = d.textures[(label + 1) % len(d.textures)]
    # Fig. 6 shows the whole range, from the white-background image to pure texture.
    sweep = F.texture_sweep(
        white, texture, cfg.sweep_strengths, cfg.sweep_steps, mask=d.test_masks[i]
    )
    cells = sweep.images.flatten(0, 1)
    labels = torch.full((len(cells),), label)
    with torch.no_grad():
        p = model(cells).softmax(1)
    scores = run.layer_influence().influence((cells, labels)).sum(0)
    own = d.train_labels == label
    grid = sweep.images.shape[:2]
    return sweep.images, p.view(*grid, -1), scores[:, own].mean(1).view(grid)


def sweep_stage(run: StudyRun) -> Sweep:
    """Texture sweeps (strength x steps) of the first `sweep_images` test images."""
    model = run.model()
    n = min(run.config.sweep_images, len(run.data.test_labels))
    images, probs, influence = zip(*(_sweep_one(run, model, i) for i in range(n)), strict=True)
    return Sweep(
        images=torch.stack(images),
        probs=torch.stack(probs),
        intra_influence=torch.stack(influence),
        indices=torch.arange(n),
    )


def first_per_variant(variants: Tensor, n_variants: int, n: int) -> Tensor:
    """Indices of `n` images of every variant, evenly spread (over the classes)."""
    picks = []
    for v in range(n_variants):
        members = torch.nonzero(variants == v)[:, 0]
        spread = torch.linspace(0, len(members) - 1, min(n, len(members))).round().long()
        picks.append(members[spread.unique()])
    return torch.cat(picks)


@dataclass(frozen=True)
class Stage:
    """A registered stage.

    Attributes:
        name: Its name, and its file `stages/<name>.pt`.
        field: Its field in `StudyResults`.
        result: The frozen dataclass it returns.
        compute: The function that computes it.
        uses_variants: Whether it depends on the registered variants (then a change of
            `VARIANT_REGISTRY` recomputes it).
    """

    name: str
    field: str
    result: type[StageResult]
    compute: Callable[[StudyRun], StageResult]
    uses_variants: bool = True


STAGE_REGISTRY: tuple[Stage, ...] = (
    Stage("data", "data", Data, data_stage, uses_variants=False),
    Stage("model", "model", ModelState, model_stage, uses_variants=False),
    Stage("variants", "variants", Variants, variants_stage),
    Stage("predictions", "predictions", Predictions, predictions_stage),
    Stage("influence", "influence", Influence, influence_stage),
    Stage("global", "global_influence", GlobalInfluence, global_stage),
    Stage("shap", "shap", Shap, shap_stage),
    Stage("sweep", "sweep", Sweep, sweep_stage),
)
STAGES = tuple(stage.name for stage in STAGE_REGISTRY)


def stage_keys(config: StudyConfig) -> dict[str, str]:
    """Content keys of the stages: hashes of the data files, the weights and the factory.

    "data" depends on the data files only; every later stage also on the model (weights
    file and the factory's source file), and those from "variants" on also on the
    registered variants' names. Generated data ("shapes") is fixed by the configuration.
    """
    data, model = source_keys(config)
    keys = {}
    for stage in STAGE_REGISTRY:
        key = f"data={data}" if stage.name == "data" else f"data={data} model={model}"
        # The paper's four variants leave the key as it always was, so that runs written
        # before the registry existed stay valid; any other set recomputes from "variants".
        if stage.uses_variants and VARIANTS != PAPER_VARIANTS:
            key += f" variants={'|'.join(VARIANTS)}"
        keys[stage.name] = key
    return keys
