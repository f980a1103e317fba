"""Command line: `captum-layerinf demo` (also `python -m captum_layerinf demo`)."""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Sequence

from .demo import DemoConfig, run_demo


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `captum-layerinf` command."""
    parser = argparse.ArgumentParser(
        prog="captum-layerinf",
        description="Layer-wise influence functions for Captum.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small CNN on digits and explain a few images")
    defaults = DemoConfig()
    demo.add_argument("--n-train", type=int, default=defaults.n_train, help="training images")
    demo.add_argument("--n-images", type=int, default=defaults.n_images, help="test images")
    demo.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    demo.add_argument("--top", type=int, default=defaults.top, help="compound top-k")
    demo.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `captum-layerinf` console script."""
    args = build_parser().parse_args(argv)
    # torch.func internals call the deprecated torch.jit.script; not actionable for users.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    if args.command == "demo":
        run_demo(
            DemoConfig(
                n_train=args.n_train,
                n_images=args.n_images,
                epochs=args.epochs,
                top=args.top,
                seed=args.seed,
                show_progress=not args.no_progress,
            )
        )
    return 0
