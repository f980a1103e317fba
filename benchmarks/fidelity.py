"""Which influence estimate predicts retraining: leave-one-out and LDS, per layer and strategy.

Models (float64, digits 8x8, trained with Adam then polished to the optimum of the mean
cross-entropy + wd/2 ||θ||² by full-batch L-BFGS; batch-norm in eval mode from there on):
  * logistic regression (convex: influence should be near exact);
  * the digits VGG-style CNN (`DigitsVGG`, width 8 in the full run);
  * a CNN with batch-norm and a residual block (`ResCNN` below).

Estimators, each a score `[n_test, n_train]` (positive = proponent):
  * every damped strategy (exact, cg, ekfac, lissa, and pcg / auto where registered) at
    damping 1e-3, 1e-2, 1e-1: each layer alone, compound (sum, Eq. 7), Borda rank and
    vote aggregations (ours, see `captum_layerinf.evaluation.aggregation`);
  * identity (gradient similarity) and tracin (checkpoints along training): same rows;
  * global (Eq. 5) with the true Hessian (CG) and with the Gauss-Newton matrix.

Ground truth (`captum_layerinf.evaluation`), retrained from the optimum by L-BFGS with the
no-removal drift subtracted, for test images drawn uniformly from the test set:
  * leave-one-out on three selections, reported separately: `random` (uniform training
    indices, the same for every estimator), `own` (each estimator's own top proponents and
    opponents per test image), `pool` (the union of all `own` selections, common to all);
    Pearson and Spearman per test image, then mean ± SEM over test images and seeds;
  * LDS: random 50 % subsets, Spearman per test image of predicted vs actual loss change,
    mean ± SEM over test images and seeds.
Seeds: model initialisation, data order, test images and random removals.

Everything is cached under `--out` (default runs/fidelity/<mode>): a rerun resumes.

    python benchmarks/fidelity.py --small      # minutes
    python benchmarks/fidelity.py              # the full run

The models and seeds run in `--jobs` processes at once (default: 2, one torch thread
each); the tables are then made from their caches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from captum_layerinf import (
    CGSettings,
    ExactSettings,
    LayerInfluence,
    LiSSASettings,
    PCGSettings,
    available_strategies,
)
from captum_layerinf._utils.stats import mean_and_sem
from captum_layerinf.datasets import load_digits_split
from captum_layerinf.evaluation import (
    LBFGSRetrain,
    RetrainingEffects,
    aggregate_layers,
    linear_datamodeling_score,
    loo_correlations,
    random_subsets,
    retraining_effects,
)
from captum_layerinf.models import DigitsVGG
from captum_layerinf.training import train_classifier

DAMPED = ("exact", "cg", "ekfac", "lissa", "pcg", "auto")
UNDAMPED = ("identity", "tracin")


@dataclass(frozen=True)
class Config:
    """One run's sizes; saved next to its results."""

    n_train: dict = field(default_factory=lambda: {"logistic": 500, "cnn": 1000, "rescnn": 1000})
    width: int = 8
    n_test: int = 5
    seeds: tuple = (0, 1, 2)
    dampings: tuple = (1e-3, 1e-2, 1e-1)
    weight_decay: float = 1e-3
    epochs: int = 40
    polish_iters: int = 2000
    polish_tol: float = 1e-10
    retrain_iters: int = 100
    retrain_tol: float = 1e-9
    # L-BFGS in coordinates whitened by a fixed curvature matrix at the optimum, per model
    # (`LBFGSRetrain(preconditioner=...)`): only where that matrix is positive definite
    # and close to the Hessian. On the CNNs the polished point has negative Hessian
    # eigenvalues, and whitening by Gauss-Newton did not speed convergence (docs).
    retrain_preconditioner: dict = field(default_factory=lambda: {"logistic": "gauss-newton"})
    n_random: int = 30
    own_k: int = 3
    n_noise: int = 5
    n_subsets: int = 50
    lissa_max_depth: int = 300
    cg_tol: float = 1e-6
    cg_max_iter: int = 300
    pcg_tol: float | None = None  # None: the strategy's default (1e-10 in float64)
    pcg_max_iter: int = 1000
    # Dampings of the iterative solvers (cg, pcg, lissa, global-H); None: `dampings`.
    solver_dampings: tuple | None = None

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


SMALL = Config(
    n_train={"logistic": 200, "cnn": 200, "rescnn": 200},
    width=4,
    seeds=(0,),
    dampings=(1e-3, 1e-2, 1e-1),
    epochs=20,
    polish_iters=500,
    retrain_iters=60,
    n_random=12,
    own_k=2,
    n_subsets=20,
    n_noise=3,
    lissa_max_depth=50,
    cg_max_iter=100,
    pcg_tol=1e-6,
    pcg_max_iter=100,
    solver_dampings=(1e-3,),
)
SOLVERS = ("cg", "pcg", "lissa", "global-H")


class ResCNN(nn.Module):
    """conv-BN-ReLU, one residual block (conv-BN-ReLU-conv-BN + skip), ReLU, max-pool, linear."""

    def __init__(self, width: int = 8, n_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.stem, self.bn0 = nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w)
        self.conv1, self.bn1 = nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w)
        self.fc = nn.Linear(w * 16, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[batch, n_classes]` of images `[batch, 1, 8, 8]`."""
        h = F.relu(self.bn0(self.stem(x)))
        r = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(h)))))
        h = F.max_pool2d(F.relu(h + r), 2)
        return self.fc(h.flatten(1))


def build(kind: str, cfg: Config) -> tuple[nn.Module, float]:
    """The model of `kind` (float64) and its Adam learning rate."""
    if kind == "logistic":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double(), 1e-2
    if kind == "cnn":
        return DigitsVGG(width=cfg.width).double(), 3e-3
    return ResCNN(width=cfg.width).double(), 3e-3


def train_model(kind: str, cfg: Config, seed: int, folder: Path):
    """Trains (Adam, checkpoints for TracIn) and polishes to the optimum; cached."""
    train, test = load_digits_split(cfg.n_train[kind], seed=seed, dtype=torch.float64)
    x, y = train.tensors
    model, lr = build(kind, cfg)
    every = max(1, cfg.epochs // 5)
    paths = [str(folder / f"epoch{e}.pt") for e in range(every, cfg.epochs + 1, every)]
    final = folder / "optimum.pt"
    if final.exists():
        model.load_state_dict(torch.load(final, weights_only=True))
        return model.eval(), (x, y), test.tensors, paths, lr
    torch.manual_seed(seed)
    model, lr = build(kind, cfg)

    def save(epoch, m):
        if (epoch + 1) % every == 0:
            torch.save(m.state_dict(), folder / f"epoch{epoch + 1}.pt")

    train_classifier(
        model,
        train,
        epochs=cfg.epochs,
        lr=lr,
        weight_decay=cfg.weight_decay,
        seed=seed,
        on_epoch_end=save,
    )
    polish = LBFGSRetrain(x, y, cfg.weight_decay, iters=cfg.polish_iters, tol=cfg.polish_tol)
    polish(model.eval(), torch.ones(len(y), dtype=torch.bool))
    (folder / "polish.json").write_text(json.dumps({"iters_and_max_grad": polish.log}))
    torch.save(model.state_dict(), final)
    return model, (x, y), test.tensors, paths, lr


def strategy_settings(name: str, cfg: Config):
    """The `hessian=` argument of a strategy in this benchmark."""
    if name == "lissa":
        return LiSSASettings(max_depth=cfg.lissa_max_depth)
    if name == "cg":
        return CGSettings(tol=cfg.cg_tol, max_iter=cfg.cg_max_iter)
    if name == "pcg":
        return PCGSettings(tol=cfg.pcg_tol, max_iter=cfg.pcg_max_iter)
    return name


def dampings_of(name: str, cfg: Config) -> tuple:
    """The dampings an estimator runs at (iterative solvers may run at fewer)."""
    if name in SOLVERS and cfg.solver_dampings is not None:
        return cfg.solver_dampings
    return cfg.dampings


def estimators(model, train, test, paths, lr, cfg: Config, cache: Path, skip=()) -> dict:
    """Scores `[n_test, n_train]` of every estimator, keyed `strategy|which|damping`."""
    file = cache / "scores.pt"
    out = torch.load(file) if file.exists() else {}
    runs = [(s, d) for s in DAMPED if s in available_strategies() for d in dampings_of(s, cfg)]
    runs += [(s, None) for s in UNDAMPED]
    for strategy, damping in runs:
        if strategy in skip:
            continue
        tag = f"{damping:g}" if damping is not None else "-"
        if f"{strategy}|sum|{tag}" in out:
            continue
        kwargs = {"hessian": strategy_settings(strategy, cfg), "damping": damping or 0.0}
        if strategy == "tracin":
            kwargs.update(checkpoints=paths, learning_rates=[lr] * len(paths))
        start = time.perf_counter()
        li = LayerInfluence(model, train, **kwargs)
        layers = li.influence(test).double()
        if len(layers) > 1:  # one layer: every aggregate is that layer (or its ranks)
            for name, s in zip(li.layer_names, layers, strict=True):
                out[f"{strategy}|{name}|{tag}"] = s
        for method in ("sum", "rank", "vote") if len(layers) > 1 else ("sum",):
            out[f"{strategy}|{method}|{tag}"] = aggregate_layers(layers, method)
        out[f"seconds|{strategy}|{tag}"] = time.perf_counter() - start
        print(f"  {strategy} damping {tag}: {out[f'seconds|{strategy}|{tag}']:.0f} s", flush=True)
        torch.save(out, file)
    for label, hess in (
        ("global-H", strategy_settings("cg", cfg)),
        ("global-GN", ExactSettings(gauss_newton="always")),
    ):
        for damping in dampings_of(label, cfg) if label not in skip else ():
            key = f"{label}|global|{damping:g}"
            if key in out:
                continue
            start = time.perf_counter()
            li = LayerInfluence(model, train, hessian=hess, damping=damping)
            out[key] = li.global_influence(test).double()
            out[f"seconds|{label}|{damping:g}"] = time.perf_counter() - start
            print(f"  {label} damping {damping:g}: {time.perf_counter() - start:.0f} s", flush=True)
            torch.save(out, file)
    return {
        k: v for k, v in out.items() if not k.startswith("seconds|") and k.split("|")[0] not in skip
    }


def headline(name: str) -> bool:
    """Estimators that choose their own removals: aggregates and global, not single layers."""
    return name.split("|")[1] in ("sum", "rank", "vote", "global")


def own_picks(scores: dict, k: int) -> dict:
    """Per strategy and damping, `[n_test, 2k]` indices: the top-k proponents and opponents
    of its compound (sum) or global score. Rank and vote rows are scored on the pool and
    the random removals only: their own picks would double the retrainings."""
    return {
        name: torch.cat([s.topk(k, dim=1).indices, (-s).topk(k, dim=1).indices], 1)
        for name, s in scores.items()
        if name.split("|")[1] in ("sum", "global")
    }


def _row_key(row: torch.Tensor) -> str:
    return hashlib.sha1(row.numpy().tobytes()).hexdigest()


def retrain_cached(model, retrain, test, keep: torch.Tensor, file: Path, chunk: int = 10):
    """`retraining_effects` over the rows of `keep`, saved after every chunk (resumable).

    Results are keyed by the removal set itself, so a rerun with more estimators (a larger
    pool) retrains only the new removals.
    """
    done = torch.load(file) if file.exists() else {"rows": {}, "baseline": None, "drift": None}
    todo = [i for i, row in enumerate(keep) if _row_key(row) not in done["rows"]]
    for start in range(0, len(todo), chunk):
        rows = todo[start : start + chunk]
        eff = retraining_effects(model, retrain, test, keep[rows], baseline=done["baseline"])
        for i, column in zip(rows, eff.actual.T, strict=True):
            done["rows"][_row_key(keep[i])] = column
        done["baseline"], done["drift"] = eff.baseline, eff.drift
        torch.save(done, file)
        print(f"    {file.stem}: {start + len(rows)}/{len(todo)} retrainings", flush=True)
    actual = torch.stack([done["rows"][_row_key(row)] for row in keep], 1)
    return RetrainingEffects(keep, actual, done["baseline"], done["drift"])


def run_seed(kind: str, cfg: Config, seed: int, root: Path, skip=()) -> dict:
    """Scores and retrainings of one model and seed; returns per-estimator metrics."""
    skip = tuple(s.split(":")[-1] for s in skip if ":" not in s or s.startswith(f"{kind}:"))
    folder = root / f"{kind}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    clock = _clock()
    model, train, test_all, paths, lr = train_model(kind, cfg, seed, folder)
    _record(folder, "train", clock)
    n = len(train[1])
    gen = torch.Generator().manual_seed(1000 + seed)
    pick = torch.randperm(len(test_all[1]), generator=gen)[: cfg.n_test]
    test = (test_all[0][pick], test_all[1][pick])
    with torch.no_grad():
        acc = (model(test_all[0]).argmax(1) == test_all[1]).double().mean().item()
    print(f"{kind} seed {seed}: {n} train, test accuracy {acc:.1%}", flush=True)
    seconds = {"train": json.loads((folder / "seconds.json").read_text()).get("train", {})}
    clock = _clock()
    scores = estimators(model, train, test, paths, lr, cfg, folder, skip)
    seconds["estimators"] = _record(folder, "estimators", clock)
    own = own_picks(scores, cfg.own_k)
    random_idx = torch.randperm(n, generator=gen)[: cfg.n_random]
    pool = torch.cat([p.flatten() for p in own.values()]).unique()
    removals = torch.cat([random_idx, pool[~torch.isin(pool, random_idx)]])
    keep = torch.ones(len(removals), n, dtype=torch.bool)
    keep[torch.arange(len(removals)), removals] = False
    preconditioner = cfg.retrain_preconditioner.get(kind)
    retrain = LBFGSRetrain(
        train[0],
        train[1],
        cfg.weight_decay,
        iters=cfg.retrain_iters,
        tol=cfg.retrain_tol,
        preconditioner=preconditioner,
    )
    clock = _clock()
    loo = retrain_cached(model, retrain, test, keep, folder / "loo.pt")
    subsets = random_subsets(n, cfg.n_subsets, 0.5, seed)
    lds = retrain_cached(model, retrain, test, subsets, folder / "lds.pt")
    seconds["retrain"] = _record(folder, "retrain", clock, retrain.log)
    # Noise floor: the first random removals again, with 3x the budget and a 100x tighter
    # tolerance; the gap is the retraining error of the ground truth itself.
    tight = LBFGSRetrain(
        train[0],
        train[1],
        cfg.weight_decay,
        iters=3 * cfg.retrain_iters,
        tol=cfg.retrain_tol / 100,
        preconditioner=preconditioner,
        factor=retrain.factor,
    )
    ref = retrain_cached(model, tight, test, keep[: cfg.n_noise], folder / "noise.pt")
    gap = (ref.actual - loo.actual[:, : cfg.n_noise]).abs()
    noise = {
        "max_gap": float(gap.max()),
        "mean_gap": float(gap.mean()),
        "mean_abs_effect": float(ref.actual.abs().mean()),
        "tight_max_final_grad": max((g for _, g in tight.log), default=None),
        "tight_iters": [i for i, _ in tight.log],
    }
    print(f"  retrainings: {seconds['retrain']} (cached parts not recomputed)", flush=True)
    col = {int(j): i for i, j in enumerate(removals)}
    rand_cols = torch.arange(len(random_idx)).expand(cfg.n_test, -1)
    pool_cols = torch.tensor([col[int(j)] for j in pool]).expand(cfg.n_test, -1)
    metrics: dict[str, dict[str, Any]] = {}
    for name, s in scores.items():
        m: dict[str, Any] = {}
        m["random"] = [f.per_test for f in loo_correlations(s, loo, rand_cols)]
        m["pool"] = [f.per_test for f in loo_correlations(s, loo, pool_cols)]
        if name in own:
            cols = own[name].clone().apply_(lambda j: col[j])
            m["own"] = [f.per_test for f in loo_correlations(s, loo, cols)]
        m["lds"] = linear_datamodeling_score(s, lds).per_test
        metrics[name] = m
    metrics["_info"] = {
        "accuracy": acc,
        "drift": float(loo.drift.abs().max()),
        "n_removals": len(removals),
        "pool": len(pool),
        "loo_scale": float(loo.actual.abs().mean()),
        "seconds": json.loads((folder / "seconds.json").read_text()),
        "noise": noise,
        "polish": json.loads((folder / "polish.json").read_text())["iters_and_max_grad"],
    }
    return metrics


def _clock() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _record(folder: Path, stage: str, clock, log=None) -> dict:
    """Adds this stage's CPU and wall seconds (and retraining convergence) to seconds.json.

    Cached stages add ~0; a resumed run sums its parts.
    """
    file = folder / "seconds.json"
    done = json.loads(file.read_text()) if file.exists() else {}
    old = done.get(stage, {"cpu": 0.0, "wall": 0.0})
    row = {
        "cpu": round(old["cpu"] + time.process_time() - clock[0], 1),
        "wall": round(old["wall"] + time.perf_counter() - clock[1], 1),
    }
    if log:
        iters = sorted(i for i, _ in log)
        row["retrainings"] = old.get("retrainings", 0) + len(log)
        row["median_iters"] = iters[len(iters) // 2]
        row["max_iters"] = iters[-1]
        row["max_final_grad"] = max(g for _, g in log)
    elif "retrainings" in old:
        row.update({k: v for k, v in old.items() if k not in ("cpu", "wall")})
    done[stage] = row
    file.write_text(json.dumps(done))
    return row


def summarise(per_seed: list[dict]) -> dict:
    """Mean ± SEM over test images and seeds of every metric of every estimator."""
    out = {}
    for name in per_seed[0]:
        if name == "_info":
            continue
        row: dict[str, Any] = {}
        for sel in ("random", "pool", "own"):
            if sel in per_seed[0][name]:
                row[sel] = [
                    mean_and_sem(torch.cat([m[name][sel][i] for m in per_seed])) for i in (0, 1)
                ]
        row["lds"] = mean_and_sem(torch.cat([m[name]["lds"] for m in per_seed]))
        out[name] = row
    return out


def fmt(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.2f} ± {ms[1]:.2f}"


def table(results: dict, layers: bool) -> list[str]:
    """Markdown rows: estimator x model x damping; aggregates/global or single layers."""
    lines = [
        "| model | strategy | scores | damping | LOO random P | LOO random S | LOO own P "
        "| LOO pool P | LOO pool S | LDS |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, res in results.items():
        for name, row in res.items():
            strategy, which, damping = name.split("|")
            if headline(name) == layers:
                continue
            own = fmt(row["own"][0]) if "own" in row else ""
            lines.append(
                f"| {kind} | {strategy} | {which} | {damping} | {fmt(row['random'][0])} | "
                f"{fmt(row['random'][1])} | {own} | {fmt(row['pool'][0])} | "
                f"{fmt(row['pool'][1])} | {fmt(row['lds'])} |"
            )
    return lines


def figure(results: dict, path: Path) -> None:
    """LOO Pearson (random removals) vs LDS per estimator, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    colors: dict[str, Any] = {}
    for ax, (kind, res) in zip(axes[0], results.items(), strict=True):
        for name, row in res.items():
            strategy, which, _ = name.split("|")
            color = colors.setdefault(strategy, f"C{len(colors)}")
            marker = (
                "o" if which in ("sum", "global") else ("s" if which in ("rank", "vote") else ".")
            )
            ax.scatter(
                row["random"][0][0],
                row["lds"][0],
                c=color,
                marker=marker,
                s=30 if marker != "." else 12,
            )
        ax.set_title(kind)
        ax.set_xlabel("LOO Pearson, random removals")
        ax.set_ylabel("LDS (Spearman)")
        ax.axhline(0, c="0.8", lw=0.5)
        ax.axvline(0, c="0.8", lw=0.5)
    handles = [plt.Line2D([], [], c=c, marker="o", ls="", label=s) for s, c in colors.items()]
    handles += [
        plt.Line2D([], [], c="k", marker=m, ls="", label=t)
        for m, t in (("o", "sum / global"), ("s", "rank / vote"), (".", "one layer"))
    ]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


UNIT_COST = {"logistic": 1, "rescnn": 20, "cnn": 25}
"""Relative cost of one seed of each model (`--small` CPU seconds), to start the longest first."""


def run_units(units: list[tuple[str, int]], forwarded: list[str], jobs: int, root: Path) -> None:
    """Runs `run_seed` of each `(kind, seed)` in its own process, `jobs` at a time.

    Each writes its cache under `root` and its output to `<kind>-seed<seed>/log.txt`; a
    failed one raises with the end of its log.
    """
    units = sorted(units, key=lambda u: -UNIT_COST.get(u[0], 25))

    def one(unit: tuple[str, int]) -> None:
        kind, seed = unit
        log = root / f"{kind}-seed{seed}" / "log.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as out:
            done = subprocess.run(
                [sys.executable, __file__, *forwarded, "--unit", f"{kind}:{seed}"],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if done.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
            raise RuntimeError(f"{kind} seed {seed} failed (exit {done.returncode}):\n{tail}")
        print(f"{kind} seed {seed}: done ({log})", flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for _ in pool.map(one, units):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--small", action="store_true", help="smaller models and fewer retrainings (see SMALL)"
    )
    parser.add_argument("--models", default="logistic,cnn,rescnn")
    parser.add_argument("--out", type=Path, default=None, help="cache folder (runs/fidelity)")
    parser.add_argument(
        "--skip",
        default="",
        help="estimators to leave out (partial run), e.g. cg,global-H or rescnn:lissa",
    )
    parser.add_argument("--seeds", default=None, help="comma-separated subset of the seeds")
    parser.add_argument("--figure", type=Path, default=None, help="where to save the figure")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: the small tensors here gain little from more, and on a "
        "shared machine extra threads spin and burn CPU)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="models x seeds run in this many processes at once (each with --threads)",
    )
    parser.add_argument("--unit", default=None, help=argparse.SUPPRESS)  # one kind:seed
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    cfg = SMALL if args.small else Config()
    root = (args.out or Path("runs/fidelity")) / f"{'small' if args.small else 'full'}-{cfg.key()}"
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    start = _clock()
    kinds = args.models.split(",")
    skip = tuple(args.skip.split(",")) if args.skip else ()
    seeds = cfg.seeds if args.seeds is None else tuple(int(s) for s in args.seeds.split(","))
    if args.unit is not None:
        kind, seed = args.unit.split(":")
        run_seed(kind, cfg, int(seed), root, skip)
        return
    if args.jobs > 1:
        forwarded = ["--small"] * args.small + ["--threads", str(args.threads)]
        forwarded += ["--out", str(args.out)] * (args.out is not None) + ["--skip", args.skip]
        run_units([(k, s) for s in seeds for k in kinds], forwarded, args.jobs, root)
    # Seed-major order: an interrupted full run has every model at its first seeds. After
    # `run_units`, every part is cached and this only reads it.
    per_seed: dict[str, list[dict]] = {kind: [] for kind in kinds}
    for seed in seeds:
        for kind in kinds:
            per_seed[kind].append(run_seed(kind, cfg, seed, root, skip))
    infos = {kind: [m["_info"] for m in per_seed[kind]] for kind in kinds}
    results = {kind: summarise(per_seed[kind]) for kind in kinds}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - start[0] + children.ru_utime + children.ru_stime
    cpu_min, minutes = cpu / 60, (time.perf_counter() - start[1]) / 60
    print(f"\nconfig: {json.dumps(asdict(cfg))}, seeds run: {seeds}, skipped: {skip}")
    print(
        f"total {minutes:.1f} min wall, {cpu_min:.1f} min CPU, load average "
        f"{os.getloadavg()} (cached parts not recomputed); per seed: {infos}\n"
    )
    print("Aggregates and global scores (mean ± SEM over test images x seeds)\n")
    print("\n".join(table(results, layers=False)))
    print("\nEach layer alone\n")
    print("\n".join(table(results, layers=True)))
    torch.save(results, root / "results.pt")
    if args.figure is not None:
        figure(results, args.figure)


if __name__ == "__main__":
    main()
