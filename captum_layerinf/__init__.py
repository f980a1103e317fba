"""captum-layerinf: layer-wise influence functions for Captum."""

from ._version import __version__
from .influence import (
    AutoSettings,
    CGSettings,
    EKFACSettings,
    ExactSettings,
    FidelityReport,
    GaussNewtonSettings,
    LayerInfluence,
    LiSSASettings,
    PCGSettings,
    TracInSettings,
    available_strategies,
)

__all__ = [
    "AutoSettings",
    "CGSettings",
    "EKFACSettings",
    "ExactSettings",
    "GaussNewtonSettings",
    "FidelityReport",
    "LayerInfluence",
    "LiSSASettings",
    "PCGSettings",
    "TracInSettings",
    "__version__",
    "available_strategies",
]
