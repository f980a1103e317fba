"""A self-contained HTML report of a disturbance study run."""

from .html import write_report

__all__ = ["write_report"]
