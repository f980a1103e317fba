"""Resumable scores on disk: computing, rereading everything, and resuming half a run.

Workload: the VGG-style digits CNN (6 layers, 6,562 parameters), `hessian="exact"`,
N training x M test images, batches of 64 (one chunk each). Timed, each with a fresh
`LayerInfluence` (constructor, fingerprint and all inside the timing):

- plain:   `influence()` without a store;
- first:   with `output_dir`, nothing on disk (computes and writes every chunk);
- reread:  the same call again, every chunk on disk (fingerprint + memory-mapped reads);
- top-k:   `influence(k=5)` with every chunk on disk (merged across chunks);
- resume:  half of the chunks deleted first (refits the curvature, computes that half);
- fit:     the curvature fit alone (what a resume pays before its first missing chunk).

A warm-up call runs first (the first torch.func call of a process pays one-off costs).

    python benchmarks/store_resume.py                  # 1000 x 50
    python benchmarks/store_resume.py --n-train 300 --n-test 20
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from _common import trained_digits

from captum_layerinf import LayerInfluence
from captum_layerinf.influence import ScoreStore


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--n-test", type=int, default=50)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    model, train, test, _, acc = trained_digits(args.n_train, args.n_test, epochs=20)
    x, y = test.tensors
    print(f"digits CNN, test accuracy {acc:.3f}; {args.n_train} train x {args.n_test} test")

    def run(out, **kw):
        return LayerInfluence(model, train, output_dir=out).influence((x, y), **kw)

    # Warm-up: the first torch.func call of a process pays one-off costs.
    LayerInfluence(model, train).influence((x[:1], y[:1]))
    _, t_fit = timed(lambda: LayerInfluence(model, train)._fit("layers", False))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "scores"
        plain, t_plain = timed(lambda: run(None))
        first, t_first = timed(lambda: run(out))
        reread, t_read = timed(lambda: run(out))
        top, t_top = timed(lambda: run(out, k=5))
        (store,) = ScoreStore.find(out)
        for i in range(0, store.n_chunks, 2):
            (store.path / "chunks" / f"{i:05d}.json").unlink()
            (store.path / "chunks" / f"{i:05d}.npy").unlink()
        resumed, t_resume = timed(lambda: run(out))
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        shutil.rmtree(out)
    assert torch.equal(first, plain) and torch.equal(reread, first) and torch.equal(resumed, first)
    assert torch.equal(top.indices, plain.topk(5, dim=-1).indices)
    print(f"{store.n_chunks} chunks, {size / 2**20:.1f} MiB on disk; all results identical")
    print(f"{'run':<32}{'seconds':>10}{'vs first':>10}")
    rows = [
        ("plain (no store)", t_plain),
        ("first (compute + write)", t_first),
        ("reread (all on disk)", t_read),
        ("top-5 (all on disk)", t_top),
        ("resume (half missing)", t_resume),
        ("curvature fit alone", t_fit),
    ]
    for name, t in rows:
        print(f"{name:<32}{t:>10.2f}{t_first / t:>9.1f}x")
    print(f"store overhead on the first run: {100 * (t_first / t_plain - 1):+.1f} %")


if __name__ == "__main__":
    main()
