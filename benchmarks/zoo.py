"""torchvision architectures under the default `hessian="auto"`: choices, time, memory, check.

Per architecture (random weights, `num_classes=10`, nothing downloaded) and size — 32x32
with 1,000 training images and 224x224 with 100 (`--small`: 32x32 with 64) — one process
runs the default `LayerInfluence(model, train)` on 8 test images: the strategy chosen per
layer, seconds of `influence`, `global_influence` and `check`, the process's peak RSS, and
`check()`'s Pearson correlation per layer (min / median over layers; all of them in the
JSON written with `--json`).

    python benchmarks/zoo.py --small                  # minutes
    python benchmarks/zoo.py --archs resnet18 --sizes 32:1000
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

ARCHS = [
    "resnet18",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "vgg11_bn",
    "shufflenet_v2_x0_5",
    "densenet121",
]
N_TEST, N_CLASSES = 8, 10


def run_one(arch: str, size: int, n_train: int) -> dict:
    """The measurements of one architecture and size (in this process)."""
    from captum_layerinf import LayerInfluence

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=N_CLASSES).eval()
    x = torch.randn(n_train + N_TEST, 3, size, size)
    y = torch.randint(0, N_CLASSES, (n_train + N_TEST,))
    train, test = (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
    result: dict = {"arch": arch, "size": size, "n_train": n_train}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        li = LayerInfluence(model, train, batch_size=32)
        for key, call in (
            ("influence", lambda: li.influence(test)),
            ("global", lambda: li.global_influence(test)),
            ("check", lambda: li.check(test, warn_below=-1.0)),
        ):
            start = time.perf_counter()
            try:
                out = call()
                result[f"{key}_s"] = time.perf_counter() - start
                if key == "check":
                    result["pearson"] = dict(zip(out.layers, out.pearson.tolist(), strict=True))
            except Exception as e:  # recorded: the table shows which call failed and why
                result[f"{key}_error"] = f"{type(e).__name__}: {str(e)[:120]}"
            # Each call's result as it ends: a run stopped by --timeout still reports them.
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({**result, "peak_mib": peak}), file=sys.stderr, flush=True)
        # After the fits: they label the curved blocks (see `LayerInfluence.strategies`).
        result["strategies"] = {k: v[0] for k, v in li.strategies.items()}
    result["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def row(r: dict) -> str:
    """One markdown table row."""
    names = list(r["strategies"].values())
    layers = [n for k, n in r["strategies"].items() if k != "<global>"]
    counts = ", ".join(f"{n} {layers.count(n)}" for n in dict.fromkeys(layers))

    def sec(key):
        return f"{r[key + '_s']:.1f}" if key + "_s" in r else f"fails ({r[key + '_error']})"

    p = sorted(r.get("pearson", {}).values())
    pear = f"{p[0]:.3f} / {p[len(p) // 2]:.3f}" if p else "-"
    ratio = (
        f"{100 * r['check_s'] / r['influence_s']:.0f} %"
        if "check_s" in r and "influence_s" in r
        else "-"
    )
    return (
        f"| {r['arch']} | {r['size']} | {r['n_train']} | {counts} | {names[-1]} | "
        f"{sec('influence')} | {sec('global')} | {sec('check')} | {ratio} | "
        f"{r['peak_mib']:,.0f} | {pear} |"
    )


def unfinished(arch: str, size: str, n: str, timeout: float, stderr) -> str:
    """The row of a run stopped by the timeout: the calls that ended, then what did not."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    done = [line for line in (stderr or "").splitlines() if line.startswith("{")]
    if not done:
        return f"| {arch} | {size} | {n} | not finished within {timeout:g} s |"
    last = json.loads(done[-1])
    cells = [
        f"{last[k + '_s']:.1f}" if k + "_s" in last else f"not finished within {timeout:g} s"
        for k in ("influence", "global", "check")
    ]
    return (
        f"| {arch} | {size} | {n} | - | - | {' | '.join(cells)} | - | "
        f"{last['peak_mib']:,.0f} (so far) | - |"
    )


def failure(returncode: int, stderr: str) -> str:
    """Why a measuring process failed: its signal (SIGKILL: likely out of memory) or error."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (likely the kernel's out-of-memory killer)" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"process failed: {lines[-1][:200] if lines else f'exit code {returncode}'}"


HEADER = (
    "| model | px | n_train | strategies (layers) | global | influence s | global s | "
    "check s | check / influence | peak RSS MiB | check Pearson min / median |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="32x32 with 64 training images")
    parser.add_argument("--archs", nargs="*", default=ARCHS)
    parser.add_argument("--sizes", nargs="*", default=None, help="px:n_train, e.g. 32:1000")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per architecture and size"
    )
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        arch, size, n = args.one.split(":")
        print(json.dumps(run_one(arch, int(size), int(n))))
        return
    sizes = args.sizes or (["32:64"] if args.small else ["32:1000", "224:100"])
    results = []
    print(HEADER, flush=True)
    for spec in sizes:
        for arch in args.archs:
            size, n = spec.split(":")
            try:
                done = subprocess.run(
                    [sys.executable, __file__, "--one", f"{arch}:{size}:{n}"],
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                )
            except subprocess.TimeoutExpired as stopped:
                print(unfinished(arch, size, n, args.timeout, stopped.stderr), flush=True)
                continue
            if done.returncode != 0:
                print(f"| {arch} | {size} | {n} | {failure(done.returncode, done.stderr)} |")
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(row(results[-1]), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
