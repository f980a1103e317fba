"""Offline datasets: generated or shipped inside an installed package."""

from .digits import load_digits_split

__all__ = ["load_digits_split"]
