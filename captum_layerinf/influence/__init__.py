"""Layer-wise influence: `LayerInfluence` and its curvature strategies."""

from .layer_influence import LayerInfluence
from .strategies import (
    CaptumSettings,
    ExactSettings,
    IdentitySettings,
    TracInSettings,
    available_strategies,
    register_strategy,
)

__all__ = [
    "CaptumSettings",
    "ExactSettings",
    "IdentitySettings",
    "LayerInfluence",
    "TracInSettings",
    "available_strategies",
    "register_strategy",
]
