"""One intra-op torch thread for tests made of many small ops.

On a busy 2-core machine two OpenMP threads spin-waiting on each other made such tests up
to ~100x slower (measured: 0.15 s against 17 s for 30 texture steps at 24 x 24); a fixed
thread count also keeps float results bit-identical between a test and its subprocesses.
Use as `_one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)`.
"""

import torch


def one_torch_thread():
    """Sets one torch thread for the fixture's scope, then restores the previous count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
