"""The disturbance probes on scikit-image photos: original / white background / textured / styled.

Writes two figures (offline, CPU):

- `runs/figures/disturbances.png`: chelsea, coffee and astronaut; white background from a
  GrabCut mask; the texture (brick, grass, gravel) put on the object of the white-background
  image, as in the paper; the whole original image styled (brush strokes, mosaic, waves);
- `runs/figures/texture_sweep.png`: the paper's Fig. 6 on chelsea: percentage of texture
  (rows) against L-BFGS steps (columns), and the Gram distance to the texture.

    python scripts/figure_disturbances.py [--size 160] [--steps 100] [--out runs/figures]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from skimage import data  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from captum_layerinf.transforms import (  # noqa: E402
    GrabCutSegmenter,
    StyleTransfer,
    TextureTransfer,
    WhiteBackground,
    plot_disturbances,
    plot_gram_distance,
    plot_texture_sweep,
    texture_sweep,
)

PHOTOS = (("chelsea", "brick", "brush_strokes"), ("coffee", "grass", "mosaic"),
          ("astronaut", "gravel", "waves"))  # fmt: skip


def photo(name: str, size: int) -> tv_tensors.Image:
    """A scikit-image photo as a uint8 Image whose shorter side is `size`."""
    image = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)
    return tv_tensors.Image(TF.resize(image, size, antialias=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160, help="shorter side in pixels")
    parser.add_argument("--steps", type=int, default=100, help="L-BFGS steps")
    parser.add_argument("--out", type=Path, default=Path("runs/figures"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    rows = []
    for name, texture, style in PHOTOS:
        start = time.perf_counter()
        image = photo(name, args.size)
        mask = tv_tensors.Mask(GrabCutSegmenter()(image))
        white, _ = WhiteBackground()(image, mask)
        textured, _ = TextureTransfer(texture, strength=1.0, steps=args.steps)(white, mask)
        styled = StyleTransfer(style, steps=args.steps)(image)
        rows.append([image, white, textured, styled])
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    fig, _ = plot_disturbances(
        rows,
        [f"{n}\n+ {t}\n+ {s}" for n, t, s in PHOTOS],
        ["original", "white background\n(GrabCut)", "textured object", "styled"],
        height=args.size,
    )
    fig.savefig(args.out / "disturbances.png", dpi=180, bbox_inches="tight")
    plt.close(fig)

    start = time.perf_counter()
    cat = photo("chelsea", 128)
    cat_mask = GrabCutSegmenter()(cat)
    sweep = texture_sweep(cat, "gravel", steps=(5, 10, 20, 50, args.steps), mask=cat_mask)
    print(f"texture sweep: {time.perf_counter() - start:.1f} s", flush=True)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 6), gridspec_kw={"width_ratios": [2.2, 1]})
    plot_texture_sweep(sweep, ax=left)
    left.set_title("gravel texture on the GrabCut object of chelsea")
    plot_gram_distance(sweep, ax=right)
    fig.tight_layout()
    fig.savefig(args.out / "texture_sweep.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {args.out / 'disturbances.png'} and {args.out / 'texture_sweep.png'}")


if __name__ == "__main__":
    main()
