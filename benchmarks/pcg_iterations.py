"""Iterations of CG with and without the EK-FAC preconditioner (`hessian="pcg"`) per layer.

Workload: the benchmarks' digits VGG-style CNN (4 conv + 2 linear, 6,562 parameters,
trained as in exact_vs_captum.py), in float64 so that the precision floor plays no part.
Per damping and layer, CG solves `(H_l + λ I) x = ∇L(ẑ)` for `--n-test` test examples at
once, with exact Hessian-vector products over `--n-train` training images; after every
iteration the scores `x · ∇L(z_j)` are compared with `exact`'s (a dense solve). Printed:
iterations (one pass over the training set each) and seconds until the relative score
error `max |s - s_exact| / max |s_exact|` is at most 1e-3, for plain CG ("none") and
EK-FAC-preconditioned CG ("ekfac"), and the EK-FAC fit's seconds per layer (paid once,
before any solve; not included in the PCG column).

    python benchmarks/pcg_iterations.py                     # 500 train x 10 test
    python benchmarks/pcg_iterations.py --n-train 1500 --n-test 100
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from _common import trained_digits

from captum_layerinf import LayerInfluence, PCGSettings
from captum_layerinf.influence.strategies.cg import conjugate_gradient

TARGET = 1e-3
DAMPINGS = (1e-2, 1e-3)


class _Reached(Exception):
    pass


def block_gradients(li: LayerInfluence, inputs) -> list[torch.Tensor]:
    """Per block, the per-example gradients `[n, P]` of `inputs` (float64)."""
    strategy, ctx = li._fit("layers", False)
    parts: list[list[torch.Tensor]] = [[] for _ in strategy.blocks]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*inputs), batch_size=256)
    for x, y in loader:
        for i, _, g in li._source(strategy, ctx).chunks((x,), y):
            parts[i].append(g.double())
    return [torch.cat(p) for p in parts]


def solve(li: LayerInfluence, block: int, test_g, train_g, reference, max_iter: int):
    """Iterations and seconds of CG on one block until the score error reaches TARGET."""
    strategy, _ = li._fit("layers", False)
    scale = reference.abs().max()
    reached: dict[str, float] = {}
    start = time.perf_counter()

    def check(it: int, x: torch.Tensor) -> None:
        if float((x @ train_g.T - reference).abs().max() / scale) <= TARGET:
            reached.update(iterations=it, seconds=time.perf_counter() - start)
            raise _Reached

    precondition = None
    if strategy.settings.preconditioner != "none":
        precondition = lambda r: strategy._precondition(block, r)  # noqa: E731
    try:
        conjugate_gradient(
            strategy.operators[block],
            test_g,
            1e-14,
            max_iter,
            preconditioner=precondition,
            callback=check,
        )
    except _Reached:
        return reached["iterations"], reached["seconds"]
    return None, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=10)
    parser.add_argument("--max-iter", type=int, default=2000)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, train, test, _, acc = trained_digits(args.n_train, args.n_test)
    model = model.double()
    train = torch.utils.data.TensorDataset(train.tensors[0].double(), train.tensors[1])
    x, y = test.tensors[0].double(), test.tensors[1]
    print(
        f"Digits VGG-style CNN (6,562 parameters, test accuracy {acc:.1%}), float64, "
        f"{args.n_train} train x {args.n_test} test; iterations (seconds) to relative "
        f"score error {TARGET:g} against exact\n"
    )
    print("| damping | layer | parameters | CG (none) | PCG (ekfac) | EK-FAC fit s |")
    print("|---:|---|---:|---:|---:|---:|")
    for damping in DAMPINGS:
        exact = LayerInfluence(model, train, damping=damping)
        ex_strategy, _ = exact._fit("layers", False)
        test_g = block_gradients(exact, (x, y))
        train_g = block_gradients(exact, train.tensors)
        runs = {}
        for kind in ("none", "ekfac"):
            start = time.perf_counter()
            li = LayerInfluence(
                model, train, damping=damping, hessian=PCGSettings(preconditioner=kind)
            )
            li._fit("layers", False)
            runs[kind] = (li, time.perf_counter() - start)
        for b, block in enumerate(ex_strategy.blocks):
            reference = ex_strategy.inverse_hvp(b, test_g[b]) @ train_g[b].T
            cells = []
            for kind in ("none", "ekfac"):
                it, sec = solve(runs[kind][0], b, test_g[b], train_g[b], reference, args.max_iter)
                cells.append(f"{it} ({sec:.1f} s)" if it else f"> {args.max_iter}")
            fit = runs["ekfac"][1] / len(ex_strategy.blocks)
            print(
                f"| {damping:g} | {block.name} | {block.numel:,} | {cells[0]} | {cells[1]} "
                f"| {fit:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
