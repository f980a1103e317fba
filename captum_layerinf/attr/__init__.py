"""Test-side attributions from the seed papers, in Captum's attribution style."""

from .layered import LayeredExplanation, LayeredExplanationResult
from .mim import monotone_influence
from .plots import layer_scores_from_influence, plot_layer_rankings, plot_layered_explanation

__all__ = [
    "LayeredExplanation",
    "LayeredExplanationResult",
    "layer_scores_from_influence",
    "monotone_influence",
    "plot_layer_rankings",
    "plot_layered_explanation",
]
