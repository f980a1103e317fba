"""Small tensor helpers."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable

from torch import Tensor


def tensor_sum(terms: Iterable[Tensor]) -> Tensor:
    """`sum(terms)` typed as a Tensor: the same additions in the same order; needs one term."""
    return functools.reduce(operator.add, terms)
