"""Layer-wise influence: `LayerInfluence` and its curvature strategies."""

from ._check import FidelityReport
from ._store import CorruptChunkError, ScoreStore, StoreMismatchError
from .layer_influence import LayerInfluence
from .strategies import (
    AutoSettings,
    CaptumSettings,
    CGSettings,
    EKFACSettings,
    ExactSettings,
    GaussNewtonSettings,
    IdentitySettings,
    LiSSASettings,
    PCGSettings,
    TracInSettings,
    available_strategies,
    register_strategy,
)

__all__ = [
    "AutoSettings",
    "CGSettings",
    "CaptumSettings",
    "CorruptChunkError",
    "EKFACSettings",
    "ExactSettings",
    "GaussNewtonSettings",
    "FidelityReport",
    "IdentitySettings",
    "LayerInfluence",
    "LiSSASettings",
    "PCGSettings",
    "ScoreStore",
    "StoreMismatchError",
    "TracInSettings",
    "available_strategies",
    "register_strategy",
]
