"""One intra-op thread for the transform tests.

The texture / style optimisation runs thousands of tiny convolutions; on a busy 2-core
machine, two OpenMP threads spin-waiting on each other made them ~100x slower (measured:
0.15 s against 17 s for 30 steps at 24 x 24).
"""

import pytest

from .._threads import one_torch_thread

_one_thread = pytest.fixture(autouse=True, scope="package")(one_torch_thread)
