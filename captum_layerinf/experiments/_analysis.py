"""The study's tables, figures and findings from its stage results (cheap: always rerun)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from .. import analysis as A  # noqa: E402
from ..analysis import plots as P  # noqa: E402
from ..transforms import TextureSweep, plot_texture_sweep  # noqa: E402
from ._sections import GUIDES  # noqa: E402
from ._variants import VARIANTS  # noqa: E402


class _Writer:
    """Saves tables and figures under `out_dir` and collects the report's sections."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        for sub in ("tables", "figures"):
            (out_dir / sub).mkdir(parents=True, exist_ok=True)
        self.sections: list[dict] = []

    def section(self, key: str, title: str) -> dict:
        entry = {"key": key, "title": title, "guide": GUIDES[key], "tables": [], "figures": []}
        self.sections.append(entry)
        return entry

    def table(self, section: dict, name: str, table: A.Table) -> None:
        table.save(self.out_dir / "tables" / f"{name}.json")
        section["tables"].append(f"tables/{name}.json")

    def figure(self, section: dict, name: str, fig) -> None:
        fig.savefig(self.out_dir / "figures" / f"{name}.png", dpi=110)
        plt.close(fig)
        section["figures"].append(f"figures/{name}.png")


def _variance_ratio(values: Tensor, groups: Tensor, n_groups: int) -> Tensor:
    """Between-group over within-group variance of each row of `values [rows, n]`."""
    means = A.group_mean(values, groups, n_groups)
    within = torch.stack([values[:, groups == g].var(1) for g in range(n_groups)], 1).mean(1)
    return means.var(1) / within.clamp_min(1e-300)


def analyse(cfg, out: dict, model: nn.Module, out_dir: Path) -> list[str]:
    """Writes every table and figure and `sections.json`; returns the findings."""
    w = _Writer(out_dir)
    d, v, names = out["data"], out["variants"], out["data"]["class_names"]
    n_classes, labels, kinds = len(names), v["labels"], v["variants"]
    probs = out["predictions"]["probs"]
    pred = probs.argmax(1)
    correct = pred == labels
    train_labels = d["train_labels"]
    layer_scores = out["influence"]["scores"].double()
    layer_names = list(out["influence"]["layer_names"])
    compound = layer_scores.sum(0)
    global_scores = out["global"]["scores"].double()
    intra_l, _ = A.intra_inter(A.class_average(layer_scores, train_labels, n_classes), labels)
    intra, inter = A.intra_inter(A.class_average(compound, train_labels, n_classes), labels)
    g_intra, _ = A.intra_inter(A.class_average(global_scores, train_labels, n_classes), labels)

    summary = w.section("summary", "Summary")

    s = w.section("table1", "Table 1: how each disturbance is classified")
    t1 = A.accuracy_table(probs, labels, kinds, VARIANTS, names)
    w.table(s, "table1_accuracy", t1)
    rows = t1.rows[: n_classes * len(VARIANTS)]
    grid = torch.tensor([[r[3] for r in rows]]).view(n_classes, len(VARIANTS))
    err = torch.tensor([[r[4] for r in rows]]).view(n_classes, len(VARIANTS))
    w.figure(s, "table1_accuracy", P.plot_accuracy(grid, err, names, VARIANTS)[0])

    s = w.section("table3", "Table 3: texture patches, and objects given another class's texture")
    w.table(s, "table3_patches", A.texture_patch_table(out["predictions"]["texture_probs"], names))
    textured = kinds == VARIANTS.index("textured")
    t3 = A.cue_conflict_table(
        pred[textured], labels[textured], v["texture_labels"][textured], names
    )
    w.table(s, "table3_conflict", t3)

    s = w.section("gallery", "Fig. 2: test images beside their most influential training images")
    _gallery(w, s, cfg, d, v, compound, pred, names)

    s = w.section("table2", "Table 2: class of the most influential training image")
    rows_t = torch.cat([A.top_class(layer_scores, train_labels)])
    rows_t = torch.cat(
        [
            rows_t,
            A.top_class(compound, train_labels)[None],
            A.top_class(global_scores, train_labels)[None],
        ]
    )
    row_names = [*layer_names, "compound", "global"]
    refs = {"true class": labels, "texture class": v["texture_labels"]}
    w.table(s, "table2_summary", A.top_class_table(rows_t, row_names, kinds, VARIANTS, refs))
    w.table(s, "table2_images", _per_image_table(rows_t, row_names, v, pred, intra, names))

    s = w.section("iavg", "Intra- and inter-class average influence (I_avg, I_l_avg)")
    w.table(s, "iavg", _iavg_table(intra, inter, g_intra, intra_l, layer_names, kinds))

    s = w.section("ranges", "Figs. 3, 4, 7: influence ranges, correct and incorrect predictions")
    fig, _ = P.plot_influence_ranges(intra, labels, kinds, correct, names, VARIANTS)
    w.figure(s, "ranges_intra", fig)
    fig, _ = P.plot_influence_ranges(
        inter, labels, kinds, correct, names, VARIANTS, ylabel="inter-class I_avg"
    )
    w.figure(s, "ranges_inter", fig)

    s = w.section("layers", "Fig. 9: mean influence per layer and variant")
    means = A.group_mean(intra_l, kinds, len(VARIANTS)).T
    w.figure(s, "layers_mean", P.plot_layer_means(means, VARIANTS, layer_names)[0])
    ratio = _variance_ratio(intra_l, kinds, len(VARIANTS))
    sep = A.Table(
        "Which layers separate the variants",
        ["layer", "between / within variance of intra-class I_l_avg"],
        [[n, float(r)] for n, r in zip(layer_names, ratio, strict=True)],
        "Large values: the layer's influence differs much more between variants than "
        "between images of one variant.",
    )
    w.table(s, "layers_separation", sep)

    s = w.section("clustering", "Fig. 8: hierarchical clustering of layer profiles")
    profiles, group_names = A.group_profiles(intra_l, labels, kinds, names, VARIANTS)
    linkage = A.cluster_profiles(profiles)
    w.figure(s, "clustering_dendrogram", P.plot_dendrogram(linkage, group_names)[0])
    dist = A.correlation_distance(profiles)
    w.figure(s, "clustering_correlation", P.plot_distance_matrix(dist, group_names)[0])
    cut = A.clusters(linkage, min(4, len(group_names)))
    composition = _composition(cut, group_names)
    w.table(s, "clustering_composition", composition)

    s = w.section("sweep", "Fig. 6: texture sweep")
    _sweep(w, s, cfg, out["sweep"], d, names)

    s = w.section("shap", "Fig. 10: SHAP maps beside influential training images")
    _shap(w, s, out_dir, out["shap"])

    findings = _findings(t1, t3, out, rows_t, row_names, v, ratio, layer_names, names)
    summary["findings"] = findings
    (out_dir / "sections.json").write_text(json.dumps(w.sections, indent=1))
    return findings


def _gallery(w, s, cfg, d, v, compound, pred, names) -> None:
    n_test = len(d["test_labels"])
    picks = [i + k * n_test for i in range(min(2, n_test)) for k in range(len(VARIANTS))]
    top = compound[picks].topk(cfg.top_k, dim=1)
    train_x, train_y = d["train_images"], d["train_labels"]
    captions = [
        f"{VARIANTS[int(v['variants'][i])]}\n{names[int(v['labels'][i])]} →\n{names[int(pred[i])]}"
        for i in picks
    ]
    train_captions = [
        [f"{names[int(train_y[j])]}\n{float(sc):+.2g}" for j, sc in zip(idx, score, strict=True)]
        for idx, score in zip(top.indices, top.values, strict=True)
    ]
    fig, _ = P.plot_gallery(v["images"][picks], captions, train_x[top.indices], train_captions)
    w.figure(s, "gallery", fig)


def _per_image_table(rows_t, row_names, v, pred, intra, names) -> A.Table:
    body = []
    for i in range(rows_t.shape[1]):
        body.append(
            [
                i,
                VARIANTS[int(v["variants"][i])],
                names[int(v["labels"][i])],
                names[int(pred[i])],
                float(intra[i]),
                *[names[int(c)] for c in rows_t[:, i]],
            ]
        )
    return A.Table(
        "Table 2: per test image",
        ["image", "variant", "true", "predicted", "intra I_avg", *row_names],
        body,
        "Class of the most influential training image per layer, compound and global.",
    )


def _iavg_table(intra, inter, g_intra, intra_l, layer_names, kinds) -> A.Table:
    rows = []
    for k, name in enumerate(VARIANTS):
        sel = kinds == k
        rows.append(
            [
                name,
                float(intra[sel].mean()),
                A.sem(intra[sel]),
                float(inter[sel].mean()),
                A.sem(inter[sel]),
                float(g_intra[sel].mean()),
                *[float(intra_l[j, sel].mean()) for j in range(len(layer_names))],
            ]
        )
    return A.Table(
        "Average influence per variant",
        [
            "variant",
            "intra I_avg",
            "SEM",
            "inter I_avg",
            "SEM",
            "global intra I_avg",
            *[f"I_l_avg {n}" for n in layer_names],
        ],
        rows,
        "Intra: mean score of the training images of the test image's own class; inter: of "
        "the other classes. Compound unless marked global; I_l_avg per layer (intra).",
    )


def _composition(cut, group_names) -> A.Table:
    rows = []
    for c in sorted(set(cut.tolist())):
        members = [n for n, k in zip(group_names, cut, strict=True) if k == c]
        counts = {name: sum(m.endswith(f"| {name}") for m in members) for name in VARIANTS}
        rows.append([int(c), len(members), *counts.values()])
    return A.Table(
        "Clusters of the (class, variant) profiles",
        ["cluster", "groups", *VARIANTS],
        rows,
        "The dendrogram cut into at most 4 clusters; counts of each variant per cluster.",
    )


def _sweep(w, s, cfg, sweep, d, names) -> None:
    for i in range(len(sweep["indices"])):
        label = int(d["test_labels"][int(sweep["indices"][i])])
        grid = TextureSweep(
            sweep["images"][i], cfg.sweep_strengths, cfg.sweep_steps, torch.zeros(0)
        )
        fig, _ = plot_texture_sweep(grid)
        w.figure(s, f"sweep_images_{i}", fig)
        prob = sweep["probs"][i][..., label]
        fig, _ = P.plot_sweep(
            cfg.sweep_strengths, cfg.sweep_steps, prob, sweep["intra_influence"][i]
        )
        w.figure(s, f"sweep_curves_{i}", fig)
        probs = sweep["probs"][i]
        pred = probs.argmax(-1)
        rows = [
            [f"{100 * strength:.0f}%"]
            + [
                f"{names[int(pred[a, b])]} ({float(probs[a, b, pred[a, b]]):.2f})"
                for b in range(len(cfg.sweep_steps))
            ]
            for a, strength in enumerate(cfg.sweep_strengths)
        ]
        table = A.Table(
            f"Texture sweep of test image {int(sweep['indices'][i])} ({names[label]})",
            ["% texture", *[f"{k} steps" for k in cfg.sweep_steps]],
            rows,
            "Predicted class (its probability) for each cell of the sweep.",
        )
        w.table(s, f"sweep_predictions_{i}", table)


def _shap(w, s, out_dir, shap) -> None:
    from ..shapley import BidirectionalResult, plot_bidirectional

    result = BidirectionalResult.load(out_dir / "stages" / shap["path"])
    for j in range(len(result.labels)):
        fig, _ = plot_bidirectional(result, j)
        w.figure(s, f"shap_{j}", fig)


def _findings(t1, t3, out, rows_t, row_names, v, ratio, layer_names, names) -> list[str]:
    acc = {r[1]: r[5] for r in t1.rows if r[0] == "all classes"}
    found = [
        "Top-1 accuracy: "
        + ", ".join(f"{name} {acc[name]:.0%}" for name in VARIANTS if name in acc)
        + "."
    ]
    overall = t3.rows[-1]
    if overall[3] > overall[2]:
        verdict = "texture dominates"
    elif overall[2] > overall[3]:
        verdict = "shape (the object) dominates"
    else:
        verdict = "neither cue dominates"
    found.append(
        f"Objects given another class's texture are classified by their texture in "
        f"{overall[3]:.0%} and by their shape in {overall[2]:.0%} of cases: {verdict}."
    )
    tp = out["predictions"]["texture_probs"].argmax(1)
    found.append(
        f"Texture patches alone: {int((tp == torch.arange(len(tp))).sum())} of {len(tp)} "
        "are classified as their texture's class."
    )
    textured = v["variants"] == VARIANTS.index("textured")
    comp = rows_t[row_names.index("compound"), textured]
    found.append(
        "For the textured images the most influential training image (compound) belongs to "
        f"the texture's class in {(comp == v['texture_labels'][textured]).double().mean():.0%}"
        f" and to the object's class in {(comp == v['labels'][textured]).double().mean():.0%}"
        " of cases."
    )
    tex = out["data"].get("train_texture_labels")
    if tex is not None:
        top = out["influence"]["scores"].sum(0)[textured].argmax(1)
        same = tex[top] == v["texture_labels"][textured]
        both = same & (out["data"]["train_labels"][top] == v["labels"][textured])
        found.append(
            f"{same.double().mean():.0%} of those top training images carry the same texture "
            f"as the textured test image; {both.double().mean():.0%} are of the object's class "
            "AND carry that texture (the rare training images whose texture is not their "
            "class's own)."
        )
    order = ratio.argsort(descending=True)
    found.append(
        "Layers whose influence separates the variants most (between / within variance): "
        + ", ".join(f"{layer_names[i]} ({float(ratio[i]):.2g})" for i in order[:3])
        + "."
    )
    return found
