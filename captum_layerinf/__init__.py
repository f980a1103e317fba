"""captum-layerinf: layer-wise influence functions for Captum."""

from .influence import (
    AutoSettings,
    CGSettings,
    EKFACSettings,
    ExactSettings,
    FidelityReport,
    LayerInfluence,
    LiSSASettings,
    PCGSettings,
    TracInSettings,
    available_strategies,
)

__version__ = "0.1.0"

__all__ = [
    "AutoSettings",
    "CGSettings",
    "EKFACSettings",
    "ExactSettings",
    "FidelityReport",
    "LayerInfluence",
    "LiSSASettings",
    "PCGSettings",
    "TracInSettings",
    "__version__",
    "available_strategies",
]
