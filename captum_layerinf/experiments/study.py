"""The paper's disturbance study, end to end, with every stage cached on disk."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from ..influence import ExactSettings, LayerInfluence
from ..models import ShapesCNN, load_torchvision_model
from ..transforms import functional as F
from ._analysis import analyse
from ._cache import StageCache
from ._inputs import (
    GLOBAL_LABELS,
    build_model,
    check_inputs,
    load_data,
    load_factory_model,
    stage_keys,
)
from ._variants import VARIANTS, build_variants
from .config import StudyConfig

STAGES = ("data", "model", "variants", "predictions", "influence", "global", "shap", "sweep")


@dataclass(frozen=True)
class StudyResult:
    """Where a finished study's results are.

    Attributes:
        out_dir: The run's folder (config.json, stages/, tables/, figures/, report.html).
        report: Path of the HTML report.
        findings: One-line findings, as in the report's summary.
        computed: Stages computed in this run (the others were read from disk).
    """

    out_dir: Path
    report: Path
    findings: list[str]
    computed: list[str]


class DisturbanceStudy:
    """Which cue decides, object, texture or style, and which layers and training images carry it.

    The study of Aamir et al. (2023) on any classifier: test images are shown in four
    variants (original, white background, and textured and styled images built on the
    white-background ones); for each, the model's predictions, layer-wise, compound and
    global influence of every training image, and SHAP maps; then the paper's tables and
    figures and an HTML report. Every stage is saved in `out_dir/stages/` as it finishes,
    so an interrupted run resumes where it stopped.

    Args:
        config: What to run (a `StudyConfig`, saved as `out_dir/config.json`).
        out_dir: Folder of the results.

    Examples:
        >>> result = DisturbanceStudy(StudyConfig(), "runs/study").run()
        >>> print(result.report)
    """

    def __init__(self, config: StudyConfig | None = None, out_dir: str | Path = "runs/study"):
        self.config = config or StudyConfig()
        self.out_dir = Path(out_dir)
        self._influence: LayerInfluence | None = None

    def run(self) -> StudyResult:
        """Runs (or resumes) every stage, the analyses and the report.

        Torch runs on `config.num_threads` threads meanwhile (restored after), so that
        floating-point sums, and with them training and every finding, do not depend on
        the machine's core count.
        """
        check_inputs(self.config)
        threads = torch.get_num_threads()
        torch.set_num_threads(self.config.num_threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> StudyResult:
        cfg = self.config
        cache = StageCache(self.out_dir, cfg)
        keys = stage_keys(cfg)
        bar = tqdm(STAGES, desc="study", disable=not cfg.show_progress)
        out: dict[str, dict] = {}
        for name in bar:
            bar.set_postfix_str(name)
            out[name] = cache.stage(name, functools.partial(self._compute, name, out), keys[name])
        bar.close()
        from ..report import write_report

        findings = analyse(cfg, out, self._model(out), self.out_dir)
        report = write_report(self.out_dir)
        return StudyResult(self.out_dir, report, findings, cache.ran)

    def _compute(self, name: str, out: dict) -> dict:
        cfg = self.config
        if name == "data":
            return load_data(cfg)
        if name == "model":
            model = build_model(cfg, out["data"])
            return {"state_dict": model.state_dict()}
        if name == "variants":
            d = out["data"]
            return build_variants(
                d["test_images"],
                d["test_labels"],
                d["test_masks"],
                d["textures"],
                cfg.texture_steps,
                cfg.texture_strength,
                cfg.style,
                cfg.style_steps,
                cfg.style_weight,
                cfg.show_progress,
            )
        model = self._model(out)
        if name == "predictions":
            with torch.no_grad():
                return {
                    "probs": model(out["variants"]["images"]).softmax(1),
                    "texture_probs": model(out["data"]["textures"]).softmax(1),
                }
        v = out["variants"]
        if name == "influence":
            li = self._layer_influence(out)
            scores = li.influence((v["images"], v["labels"]), show_progress=cfg.show_progress)
            return {"scores": scores, "layer_names": li.layer_names}
        if name == "global":
            if cfg.global_hessian == "none":
                return {"scores": torch.zeros(0), "method": GLOBAL_LABELS["none"]}
            hessian = {
                "gauss-newton": ExactSettings(gauss_newton="always"),
                "hessian": ExactSettings(gauss_newton="never"),
            }.get(cfg.global_hessian, cfg.global_hessian)
            li = LayerInfluence(model, self._train(out), hessian=hessian, damping=cfg.damping)
            return {
                "scores": li.global_influence((v["images"], v["labels"])),
                "method": GLOBAL_LABELS[cfg.global_hessian],
            }
        if name == "shap":
            return self._shap(out, model)
        return self._sweep(out, model)

    def _train(self, out: dict) -> TensorDataset:
        return TensorDataset(out["data"]["train_images"], out["data"]["train_labels"])

    def _model(self, out: dict) -> nn.Module:
        cfg, n_classes = self.config, len(out["data"]["class_names"])
        state = out["model"]["state_dict"]
        if cfg.model == "shapes_cnn":
            model = ShapesCNN(width=cfg.width, n_classes=n_classes)
            model.load_state_dict(state)
            return model.eval()
        if ":" in cfg.model:
            return load_factory_model(cfg.model, state, n_classes)
        return load_torchvision_model(cfg.model, state, num_classes=n_classes)

    def _layer_influence(self, out: dict) -> LayerInfluence:
        if self._influence is None:
            self._influence = LayerInfluence(
                self._model(out),
                self._train(out),
                hessian=self.config.hessian,
                damping=self.config.damping,
            )
        return self._influence

    def _shap(self, out: dict, model: nn.Module) -> dict:
        from ..shapley import BidirectionalExplainer

        cfg, v = self.config, out["variants"]
        picks = _first_per_variant(v["variants"], cfg.shap_images)
        li = self._layer_influence(out)
        explainer = BidirectionalExplainer(
            li.model,
            li,
            shap_explainer=cfg.shap_explainer,
            n_background=min(cfg.shap_background, len(out["data"]["train_labels"])),
            seed=cfg.seed,
            class_names=out["data"]["class_names"],
        )
        result = explainer.explain(
            (v["images"][picks], v["labels"][picks]),
            k=cfg.top_k,
            masks=v["masks"][picks],
            show_progress=cfg.show_progress,
        )
        path = self.out_dir / "stages" / "shap_result.pt"
        result.save(path)
        return {"indices": picks, "path": str(path.name)}

    def _sweep(self, out: dict, model: nn.Module) -> dict:
        cfg, d = self.config, out["data"]
        n = min(cfg.sweep_images, len(d["test_labels"]))
        images, probs, influence = [], [], []
        for i in range(n):
            label = int(d["test_labels"][i])
            white = F.white_background(d["test_images"][i], d["test_masks"][i])
            texture = d["textures"][(label + 1) % len(d["textures"])]
            # Fig. 6 shows the whole range, from the white-background image to pure texture.
            sweep = F.texture_sweep(
                white, texture, cfg.sweep_strengths, cfg.sweep_steps, mask=d["test_masks"][i]
            )
            cells = sweep.images.flatten(0, 1)
            labels = torch.full((len(cells),), label)
            with torch.no_grad():
                p = model(cells).softmax(1)
            scores = self._layer_influence(out).influence((cells, labels)).sum(0)
            own = d["train_labels"] == label
            images.append(sweep.images)
            probs.append(p.view(*sweep.images.shape[:2], -1))
            influence.append(scores[:, own].mean(1).view(sweep.images.shape[:2]))
        return {
            "images": torch.stack(images),
            "probs": torch.stack(probs),
            "intra_influence": torch.stack(influence),
            "indices": torch.arange(n),
        }


def _first_per_variant(variants: Tensor, n: int) -> Tensor:
    """Indices of `n` images of every variant, evenly spread (over the classes)."""
    picks = []
    for v in range(len(VARIANTS)):
        members = torch.nonzero(variants == v)[:, 0]
        spread = torch.linspace(0, len(members) - 1, min(n, len(members))).round().long()
        picks.append(members[spread.unique()])
    return torch.cat(picks)
