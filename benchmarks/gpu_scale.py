"""Layer-wise influence at scale: VGG16 and ResNet-50, all layers, fit and scoring times.

torchvision architectures (`weights=None`, 10 classes) on random images (seeded per index,
generated on the fly: nothing is downloaded or held in memory), `--n-train` training x
`--n-test` test images of `--size` x `--size`, every layer with parameters, float32.
Strategies: the `auto` default (where this build has it) and `ekfac`, default settings.
Prints per model and strategy: fit seconds, scoring seconds (test preconditioning and the
`[n_layers, n_test, n_train]` scores), the process's CPU seconds of each (on a shared CPU
the wall seconds include waiting), peak memory (GPU: `torch.cuda.max_memory_allocated`;
CPU: peak RSS of the process) and training images per second over fit plus scoring.

`--tf32` lets CUDA matrix products use TF32 tensor cores (cuDNN convolutions already do by
default); the work count in docs/curvature.md says that the 30,000-image VGG16 target needs
it. `--query-rank r` keeps each test example's preconditioned gradient as rank-r factors
(`LayerInfluence(query_rank=)`): 200 full ones of VGG16's 138 M parameters are 110 GB.

    python benchmarks/gpu_scale.py --device cuda                       # 224, 5,000 x 100
    python benchmarks/gpu_scale.py --device cuda --n-train 30000 --n-test 200 --models vgg16 \
        --tf32 --query-rank 8
    python benchmarks/gpu_scale.py --device cpu --size 64 --n-train 256 --n-test 8
"""

from __future__ import annotations

import argparse
import resource
import time
import warnings

import torch
import torchvision
from torch.utils.data import Dataset

from captum_layerinf import LayerInfluence, available_strategies

MODELS = {"vgg16": torchvision.models.vgg16, "resnet50": torchvision.models.resnet50}


class RandomImages(Dataset):
    """`n` images `[3, size, size]` ~ N(0, 1) and labels in [0, 10), image i seeded by i."""

    def __init__(self, n: int, size: int, offset: int = 0) -> None:
        self.n, self.size, self.offset = n, size, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(self.offset + i)
        image = torch.randn(3, self.size, self.size, generator=gen)
        return image, torch.randint(10, (), generator=gen)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(model_name: str, hessian: str, args: argparse.Namespace) -> dict:
    """Fits and scores one model with one strategy; returns the measurements."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = MODELS[model_name](weights=None, num_classes=10).to(device).eval()
    train = RandomImages(args.n_train, args.size)
    test = torch.utils.data.default_collate(
        [RandomImages(args.n_test, args.size, offset=10**9)[i] for i in range(args.n_test)]
    )
    test = tuple(t.to(device) for t in test)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    li = LayerInfluence(
        model,
        train,
        hessian=hessian,
        damping=args.damping,
        batch_size=args.batch_size,
        query_rank=args.query_rank,
    )
    sync(device)
    start, cpu = time.perf_counter(), time.process_time()
    li._fit("layers", args.progress)  # the fit alone, timed apart from the scoring
    sync(device)
    fit, fit_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    scores = li.influence(test, show_progress=args.progress)
    sync(device)
    score, score_cpu = time.perf_counter() - start, time.process_time() - cpu
    assert scores.shape == (len(li.layer_names), args.n_test, args.n_train)
    assert torch.isfinite(scores).all()
    return {
        "layers": len(li.layer_names),
        "fit": fit,
        "score": score,
        "fit_cpu": fit_cpu,
        "score_cpu": score_cpu,
        "peak": peak_mib(device),
        "rate": args.n_train / (fit + score),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--damping", type=float, default=1e-2)
    parser.add_argument("--models", default="vgg16,resnet50")
    parser.add_argument("--strategies", default="auto,ekfac")
    parser.add_argument("--query-rank", type=int, default=None)
    parser.add_argument("--tf32", action="store_true", help="TF32 CUDA matrix products")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    precision = "float32, TF32 CUDA matrix products" if args.tf32 else "float32"
    rank = f", query rank {args.query_rank}" if args.query_rank else ""
    print(
        f"{where}, {torch.get_num_threads()} threads; {args.size}x{args.size}, "
        f"{args.n_train} train x {args.n_test} test, batch {args.batch_size}, damping "
        f"{args.damping}, {precision}{rank}, all layers\n"
    )
    print(
        "| model | hessian | layers | fit s | scoring s | fit CPU s | scoring CPU s "
        "| peak MiB | train images/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model_name in args.models.split(","):
        for hessian in args.strategies.split(","):
            if hessian not in available_strategies():
                print(f"| {model_name} | {hessian} | not available in this build | | | | | | |")
                continue
            r = run(model_name, hessian, args)
            print(
                f"| {model_name} | {hessian} | {r['layers']} | {r['fit']:.1f} | "
                f"{r['score']:.1f} | {r['fit_cpu']:.1f} | {r['score_cpu']:.1f} | "
                f"{r['peak']:,.0f} | {r['rate']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
