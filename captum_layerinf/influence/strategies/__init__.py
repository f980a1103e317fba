"""Curvature strategies, registered by name: importing this package registers them all."""

from .auto import AutoSettings, AutoStrategy
from .base import (
    Block,
    CurvatureStrategy,
    FitContext,
    StrategySettings,
    available_strategies,
    make_strategy,
    register_strategy,
    shardable_strategies,
)
from .captum_naive import CaptumSettings, CaptumStrategy
from .cg import CGSettings, CGStrategy
from .ekfac import EKFACSettings, EKFACStrategy
from .exact import ExactSettings, ExactStrategy
from .gauss_newton import GaussNewtonSettings, GaussNewtonStrategy
from .identity import IdentitySettings, IdentityStrategy
from .lissa import LiSSASettings, LiSSAStrategy
from .pcg import PCGSettings, PCGStrategy
from .tracin import TracInSettings, TracInStrategy, load_checkpoint

__all__ = [
    "AutoSettings",
    "AutoStrategy",
    "Block",
    "CaptumSettings",
    "CaptumStrategy",
    "CGSettings",
    "CGStrategy",
    "CurvatureStrategy",
    "EKFACSettings",
    "EKFACStrategy",
    "ExactSettings",
    "ExactStrategy",
    "FitContext",
    "GaussNewtonSettings",
    "GaussNewtonStrategy",
    "IdentitySettings",
    "IdentityStrategy",
    "LiSSASettings",
    "LiSSAStrategy",
    "PCGSettings",
    "PCGStrategy",
    "StrategySettings",
    "TracInSettings",
    "TracInStrategy",
    "available_strategies",
    "load_checkpoint",
    "make_strategy",
    "register_strategy",
    "shardable_strategies",
]
