"""Time of the eigendecomposition of one Kronecker factor, float32 against float64.

EK-FAC decomposes each layer's factors `A` (d_in x d_in) and `G` (d_out x d_out) once per
fit; factors wider than `_kronecker.EIGH_FLOAT64_DIM` are decomposed in the model's dtype.
The factor here is `XᵀX` of a seeded Gaussian `X [2 dim, dim]`, scaled to unit trace as
the fit scales it. CPU time, on `--threads` threads.

    python benchmarks/factor_eigh.py --dim 4096
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(2 * args.dim, args.dim)
    m = (x.T @ x).double()
    m /= m.diagonal().sum()
    for dtype in (torch.float32, torch.float64):
        a = m.to(dtype)
        start, wall = time.process_time(), time.perf_counter()
        torch.linalg.eigh(a)
        cpu, wall = time.process_time() - start, time.perf_counter() - wall
        print(f"dim {args.dim} {dtype}: eigh {cpu:.1f} s CPU ({wall:.1f} s wall)")


if __name__ == "__main__":
    main()
