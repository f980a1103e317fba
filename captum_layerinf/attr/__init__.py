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
from .layered import LayeredExplanation, LayeredExplanationResult
from .mim import monotone_influence
from .plots import layer_scores_from_influence, plot_layer_rankings, plot_layered_explanation

__all__ = [
    "DEFAULT_ENERGIES",
    "PAPER_VGG16_ABLATION",
    "AttributionEvaluation",
    "ContrastiveLRP",
    "DeepTaylorLRP",
    "LayeredExplanation",
    "LayeredExplanationResult",
    "RandomAttribution",
    "ablate_at_max",
    "ablation_drop",
    "attribution_heatmap",
    "box_masks",
    "compare_attributions",
    "energy_mask",
    "evaluate_attribution",
    "format_comparison",
    "layer_scores_from_influence",
    "monotone_influence",
    "plot_layer_rankings",
    "plot_layered_explanation",
    "pointing_game",
]
