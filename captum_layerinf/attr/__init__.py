"""Test-side attributions from the seed papers, in Captum's `attribute(inputs, target)` style."""

from .contrastive_lrp import ContrastiveLRP, DeepTaylorLRP
from .evaluation import (
    DEFAULT_ENERGIES,
    PAPER_VGG16_ABLATION,
    AttributionEvaluation,
    RandomAttribution,
    ablate_at_max,
    ablation_drop,
    attribution_heatmap,
    box_masks,
    compare_attributions,
    energy_mask,
    evaluate_attribution,
    format_comparison,
    pointing_game,
)

__all__ = [
    "DEFAULT_ENERGIES",
    "PAPER_VGG16_ABLATION",
    "AttributionEvaluation",
    "ContrastiveLRP",
    "DeepTaylorLRP",
    "RandomAttribution",
    "ablate_at_max",
    "ablation_drop",
    "attribution_heatmap",
    "box_masks",
    "compare_attributions",
    "energy_mask",
    "evaluate_attribution",
    "format_comparison",
    "pointing_game",
]
