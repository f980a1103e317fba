"""CPU seconds per image of each disturbance transform at 64 x 64 and 224 x 224.

Workload: scikit-image's chelsea, coffee and astronaut, centre-cropped and resized to
S x S (uint8 tv_tensors.Image), one image per call. The object mask comes from GrabCut
once, outside the timing, except in the "GrabCut" row. Texture and style use the
defaults (RandomFilterCNN, 100 L-BFGS steps). CPU seconds are the process's
(`time.process_time`) with one intra-op thread, so a busy machine does not inflate them.

    python benchmarks/transforms_speed.py [--sizes 64 224] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import torch
import torchvision
from skimage import data
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from captum_layerinf.transforms import (
    GrabCutSegmenter,
    StyleTransfer,
    TextureTransfer,
    WhiteBackground,
)

PHOTOS = ("chelsea", "coffee", "astronaut")


def photos(size: int) -> list[tv_tensors.Image]:
    out = []
    for name in PHOTOS:
        x = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)
        x = TF.resize(TF.center_crop(x, min(x.shape[1:])), [size, size], antialias=True)
        out.append(tv_tensors.Image(x))
    return out


def transforms() -> dict[str, tuple[object, bool, int]]:
    """name: (transform, takes the mask, repeats per image)."""
    return {
        "WhiteBackground, given Mask": (WhiteBackground(), True, 50),
        "WhiteBackground, GrabCut": (WhiteBackground(), False, 2),
        "TextureTransfer('gravel'), object, 100 steps": (TextureTransfer("gravel"), True, 1),
        "StyleTransfer('brush_strokes'), 100 steps": (StyleTransfer("brush_strokes"), False, 1),
    }


def seconds_per_image(transform, images, masks, repeats) -> tuple[float, float]:
    transform(images[0], masks[0]) if masks else transform(images[0])  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        for i, image in enumerate(images):
            transform(image, masks[i]) if masks else transform(image)
    n = repeats * len(images)
    return (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or "CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for size in args.sizes:
        images = photos(size)
        masks = [tv_tensors.Mask(GrabCutSegmenter()(x)) for x in images]
        for name, (transform, with_mask, repeats) in transforms().items():
            cpu, wall = seconds_per_image(transform, images, masks if with_mask else [], repeats)
            results.setdefault(name, {})[str(size)] = {"cpu_s": cpu, "wall_s": wall}
            print(f"{size:>4} {name}: {cpu:.3g} CPU s / image ({wall:.3g} s wall)", flush=True)
    sizes = [str(s) for s in args.sizes]
    print(f"\nCPU seconds per image ({args.threads} thread, {cpu_name()}):\n")
    print("| transform | " + " | ".join(f"{s} x {s}" for s in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for name, by_size in results.items():
        print(f"| {name} | " + " | ".join(f"{by_size[s]['cpu_s']:.3g}" for s in sizes) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {
        "date": date.today().isoformat(),
        "threads": args.threads,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "machine": platform.platform(),
        "cpu": cpu_name(),
        "seconds_per_image": results,
    }
    path = args.out / "transforms_speed.json"
    path.write_text(json.dumps(record, indent=2))
    print(f"\nsaved {path}")


if __name__ == "__main__":
    main()
