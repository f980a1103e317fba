"""captum-layerinf: layer-wise influence functions for Captum."""

from .influence import ExactSettings, LayerInfluence, TracInSettings, available_strategies

__version__ = "0.1.0"

__all__ = [
    "ExactSettings",
    "LayerInfluence",
    "TracInSettings",
    "__version__",
    "available_strategies",
]
