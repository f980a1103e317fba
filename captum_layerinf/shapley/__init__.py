"""Bidirectional explanations: SHAP maps of test images with their influential training images."""

from .explainer import BidirectionalExplainer
from .plots import plot_bidirectional
from .result import COMPOUND, BidirectionalResult

__all__ = ["COMPOUND", "BidirectionalExplainer", "BidirectionalResult", "plot_bidirectional"]
