"""Layer-wise influence: `LayerInfluence` and its curvature strategies."""

from .layer_influence import LayerInfluence
from .strategies import (
    CaptumSettings,
    ExactSettings,
    IdentitySettings,
    available_strategies,
    register_strategy,
)

__all__ = [
    "CaptumSettings",
    "ExactSettings",
    "IdentitySettings",
    "LayerInfluence",
    "available_strategies",
    "register_strategy",
]
