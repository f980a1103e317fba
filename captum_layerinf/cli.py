"""Command line: `captum-layerinf demo | run | report | config | digits` (also `python -m`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence

from .demo import DemoConfig, run_demo


def _digits_parser(sub) -> None:
    digits = sub.add_parser("digits", help="layer-wise influence on digits, printed (1 minute)")
    defaults = DemoConfig()
    digits.add_argument("--n-train", type=int, default=defaults.n_train, help="training images")
    digits.add_argument("--n-images", type=int, default=defaults.n_images, help="test images")
    digits.add_argument("--epochs", type=int, default=defaults.epochs, help="training epochs")
    digits.add_argument("--top", type=int, default=defaults.top, help="compound top-k")
    digits.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    digits.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `captum-layerinf` command."""
    parser = argparse.ArgumentParser(
        prog="captum-layerinf",
        description="Layer-wise influence functions for Captum: the disturbance study.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="the whole disturbance study on the embedded shapes data (minutes)"
    )
    demo.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run = sub.add_parser("run", help="the study with a configuration file (JSON)")
    run.add_argument("config", help="JSON file of StudyConfig fields (see `config`)")
    run.add_argument("--out", default=None, help="output folder (default runs/<config name>)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    report = sub.add_parser("report", help="re-render the HTML report of a finished run")
    report.add_argument("out", help="the run's output folder")
    sub.add_parser("config", help="print the default configuration as JSON, to edit")
    _digits_parser(sub)
    return parser


def _study(config, out: str) -> int:
    from .experiments import STAGES, DisturbanceStudy

    start = time.perf_counter()
    result = DisturbanceStudy(config, out).run()
    print("\n".join(f"- {line}" for line in result.findings))
    reused = len(STAGES) - len(result.computed)
    skipped = f" (reused {reused} stages)" if reused else ""
    print(f"\nStudy finished in {time.perf_counter() - start:.0f} s{skipped}.")
    print(f"Report: {result.report.resolve()}")
    return 0


def _fail(message: str) -> int:
    """Prints one line `captum-layerinf: error: ...` on stderr; the exit status 2."""
    print(f"captum-layerinf: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `captum-layerinf` console script.

    A bad configuration file (missing, not JSON, unknown key, wrong type or range, a path
    or name that does not exist) and a folder that is no study run are one line on stderr
    naming the file, the key and the fix, with exit status 2, before any work.
    """
    args = build_parser().parse_args(argv)
    from .experiments import ConfigError

    try:
        return _main(args)
    except ConfigError as err:
        return _fail(str(err))
    except FileNotFoundError as err:
        if args.command != "report":
            raise
        return _fail(str(err))


def _main(args) -> int:
    # torch.func internals call the deprecated torch.jit.script; not actionable for users.
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
    if args.command in ("demo", "run", "config"):
        from dataclasses import replace
        from pathlib import Path

        from .experiments import ConfigError, StudyConfig
        from .experiments._inputs import check_inputs

        if args.command == "config":
            print(json.dumps(StudyConfig().to_dict(), indent=1))
            return 0
        if args.command == "demo":
            return _study(StudyConfig(show_progress=not args.no_progress), args.out)
        config = replace(StudyConfig.load(args.config), show_progress=not args.no_progress)
        try:
            check_inputs(config)
        except ConfigError as err:
            raise ConfigError(f"{args.config}: {err}", err.key) from None
        return _study(config, args.out or f"runs/{Path(args.config).stem}")
    if args.command == "report":
        from .report import write_report

        print(f"Report: {write_report(args.out).resolve()}")
        return 0
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
