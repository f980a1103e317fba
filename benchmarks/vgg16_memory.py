"""VGG16 with `hessian="ekfac"`, all 16 layers: peak memory, time, and the memory per layer.

The torchvision VGG16 architecture (`weights=None`, 10 classes), float32 on CPU, digits
upscaled to RGB `--size` x `--size` (default 64; 256 train x 8 test), default
settings. Prints per layer what the strategy holds: the Kronecker eigenbases (dense, or
low-rank where the layer has fewer data rows than input dimensions, as fc6's 25,089 with
256 images), the corrected eigenvalues, and the test side.

    python benchmarks/vgg16_memory.py                                   # 64 x 64, 256 x 8
    python benchmarks/vgg16_memory.py --size 224 --n-train 16 --n-test 2 --batch-size 4
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

from captum_layerinf import LayerInfluence
from captum_layerinf.datasets import load_digits_split

MIB = 2**20


def data(n_train: int, n_test: int, size: int):
    def rgb(ds):
        x, y = ds.tensors
        x = F.interpolate(x, size=(size, size), mode="bilinear").repeat(1, 3, 1, 1)
        return torch.utils.data.TensorDataset(x, y)

    train, test = load_digits_split(n_train, n_test, seed=0)
    return rgb(train), rgb(test)


def layer_memory(li: LayerInfluence, n_test: int) -> list[dict]:
    """What ekfac keeps per layer, in MiB (float32 bases, float64 eigenvalues)."""
    strategy, _ = li._fitted["layers"]
    rows = []
    for b, block in enumerate(strategy.blocks):
        layer = strategy.layers[b]
        r_out, r_in = strategy.ranks[b]
        rows.append(
            {
                "layer": block.name,
                "params": block.numel,
                "d_out x d_in": f"{layer.d_out} x {layer.d_in}",
                "eigenbases r_out, r_in": f"{r_out}, {r_in}",
                "bases MiB": (layer.d_out * r_out + layer.d_in * r_in) * 4 / MIB,
                "eigenvalues MiB": r_out * r_in * 8 / MIB,
                "dense A would be MiB": layer.d_in**2 * 4 / MIB,
                "queries MiB": n_test * block.numel * 4 / MIB,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None, num_classes=10).eval()
    train, test = data(args.n_train, args.n_test, args.size)
    start = time.perf_counter()
    li = LayerInfluence(model, train, hessian="ekfac", batch_size=args.batch_size)
    strategy, _ = li._fit("layers", show_progress=True)
    fitted = time.perf_counter()
    scores = li.influence(test.tensors, show_progress=True)
    seconds = time.perf_counter() - start
    stages = {**strategy.seconds, "scores": time.perf_counter() - fitted}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = layer_memory(li, args.n_test)
    print(
        f"\nVGG16 (torchvision, weights=None, 10 classes), {args.size} x {args.size}, "
        f"{args.n_train} train x {args.n_test} test, {len(rows)} layers, ekfac, float32, CPU\n"
    )
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|---|" + "---:|" * (len(keys) - 1))
    for r in rows:
        cells = [
            f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else v
            for v in r.values()
        ]
        print("| " + " | ".join(cells) + " |")
    total = sum(r["bases MiB"] + r["eigenvalues MiB"] + r["queries MiB"] for r in rows)
    print(
        f"\nscores {tuple(scores.shape)}; held by the strategy and the queries: {total:,.0f} MiB; "
        f"peak RSS {peak:,.0f} MiB; {seconds:.1f} s"
    )
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    passes = stages["first pass"] + stages["second pass"]
    print(
        f"the two fitting passes: {passes / args.n_train:.2f} s per training image; "
        "eigenbases: a fixed cost; scores: test side (per test image) + training side"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"seconds": seconds, "stages": stages, "peak_mib": peak, "layers": rows, **vars(args)}
    result["out"] = str(args.out)
    name = f"vgg16_ekfac_{args.size}px_{args.n_train}x{args.n_test}.json"
    (args.out / name).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
