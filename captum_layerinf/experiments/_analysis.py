"""The study's tables, figures and findings from its stage results (cheap: always rerun).

Sections that carry a paper's table or figure number compute the paper's definition;
what the paper leaves open is one stated choice, and the package's own analyses are in a
section titled as additions.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from .. import analysis as A  # noqa: E402
from ..analysis import plots as P  # noqa: E402
from ..transforms import TextureSweep, plot_texture_sweep  # noqa: E402
from ._findings import findings  # noqa: E402
from ._io import write_atomic  # noqa: E402
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


def analyse(cfg, out: dict, model: nn.Module, out_dir: Path) -> list[str]:
    """Writes every table and figure and `sections.json`; returns the findings.

    Text is drawn literally: a class name such as "$x$" is not read as mathtext.
    """
    with matplotlib.rc_context({"text.parse_math": False}):
        return _analyse(cfg, out, model, out_dir)


def _analyse(cfg, out: dict, model: nn.Module, out_dir: Path) -> list[str]:
    w = _Writer(out_dir)
    d, v = out["data"], out["variants"]
    names = list(d["class_names"])
    shown = names
    n_classes, labels, kinds = len(names), v["labels"], v["variants"]
    probs = out["predictions"]["probs"]
    pred = probs.argmax(1)
    correct = pred == labels
    train_labels = d["train_labels"]
    layer_scores = out["influence"]["scores"].double()
    layer_names = list(out["influence"]["layer_names"])
    compound = layer_scores.sum(0)
    glob = out["global"]["scores"].double()
    has_global = glob.numel() > 0
    global_name = f"global ({_short(out['global'].get('method', ''))})"
    class_avg = A.class_average(compound, train_labels, n_classes)
    intra_l, _ = A.intra_inter(A.class_average(layer_scores, train_labels, n_classes), labels)
    intra, inter = A.intra_inter(class_avg, labels)
    s = {
        "cfg": cfg, "out": out, "names": names, "labels": labels, "kinds": kinds,
        "pred": pred, "correct": correct, "compound": compound, "intra": intra,
        "intra_l": intra_l, "layer_names": layer_names, "train_labels": train_labels,
    }  # fmt: skip

    summary = w.section("summary", "Summary: which of the paper's findings reproduce")
    w.section("method", "What ran, and what is our choice")

    sec = w.section("table1", "Table 1: how each disturbance is classified")
    t1 = A.accuracy_table(probs, labels, kinds, VARIANTS, names)
    w.table(sec, "table1_accuracy", t1)
    rows = t1.rows[: n_classes * len(VARIANTS)]
    grid = torch.tensor([[r[3] for r in rows]]).view(n_classes, len(VARIANTS))
    err = torch.tensor([[r[4] for r in rows]]).view(n_classes, len(VARIANTS))
    w.figure(sec, "table1_accuracy", P.plot_accuracy(grid, err, shown, VARIANTS)[0])

    sec = w.section("table3", "Table 3: texture patches, and objects given another class's texture")
    w.table(
        sec, "table3_patches", A.texture_patch_table(out["predictions"]["texture_probs"], names)
    )
    textured = kinds == VARIANTS.index("textured")
    t3 = A.cue_conflict_table(
        pred[textured], labels[textured], v["texture_labels"][textured], names
    )
    w.table(sec, "table3_conflict", t3)

    sec = w.section("table2", "Table 2: intra-class influential images, average influence score")
    t2 = A.intra_class_table(compound, train_labels, labels, kinds, pred, names, VARIANTS)
    w.table(sec, "table2_intra_class", t2)

    sec = w.section("gallery", "Fig. 2: test images beside their intra-class influential images")
    _gallery(w, sec, cfg, d, v, compound, pred, shown)

    sec = w.section("ranges", "Figs. 3, 4: intra-class I_avg, correct and incorrect predictions")
    fig, _ = P.plot_influence_ranges(intra, labels, kinds, correct, shown, VARIANTS)
    w.figure(sec, "ranges_intra", fig)

    sec = w.section("interclass", "Fig. 7: influence of each other class's training set")
    fig, _ = P.plot_inter_class(
        class_avg, labels, kinds, correct, shown, VARIANTS, list(range(n_classes))
    )
    w.figure(sec, "interclass", fig)

    sec = w.section("clustering", "Fig. 8: per class, clustering of the variants' layer profiles")
    per_class, trees = [], {}
    for c in range(n_classes):
        profiles, present = A.class_profiles(intra_l, labels, kinds, c, len(VARIANTS))
        vnames = [VARIANTS[k] for k in present]
        if len(present) < 2:
            continue
        link = A.cluster_profiles(profiles)
        trees[c] = (link, vnames)
        per_class.append((shown[c], link, A.correlation_distance(profiles), vnames))
    if per_class:
        w.figure(sec, "clustering_per_class", P.plot_class_clustering(per_class)[0])
    w.table(sec, "clustering_first_merge", _first_merges(trees, names))
    s["trees"] = trees

    sec = w.section("layers", "Fig. 9: per class, mean intra-class influence per layer")
    means = torch.full((n_classes, len(VARIANTS), len(layer_names)), float("nan"))
    for c in range(n_classes):
        for k in range(len(VARIANTS)):
            sel = (labels == c) & (kinds == k)
            if sel.any():
                means[c, k] = intra_l[:, sel].mean(1).float()
    w.figure(
        sec,
        "layers_per_class",
        P.plot_layer_means_per_class(means, shown, VARIANTS, layer_names)[0],
    )
    s["layer_means"] = means

    sec = w.section("sweep", "Fig. 6: texture sweep")
    _sweep(w, sec, cfg, out["sweep"], d, names)

    sec = w.section("shap", "Fig. 10: SHAP maps beside influential training images")
    _shap(w, sec, out_dir, out["shap"])

    sec = w.section("additions", "Additions (ours, not in the paper)")
    tops = [A.top_class(layer_scores, train_labels), A.top_class(compound, train_labels)[None]]
    row_names = [*layer_names, "compound"]
    if has_global:
        tops.append(A.top_class(glob, train_labels)[None])
        row_names.append(global_name)
    rows_t = torch.cat(tops)
    refs = {"true class": labels, "texture class": v["texture_labels"]}
    w.table(sec, "whole_set_top_class", A.top_class_table(rows_t, row_names, kinds, VARIANTS, refs))
    g_intra = (
        A.intra_inter(A.class_average(glob, train_labels, n_classes), labels)[0]
        if (has_global)
        else None
    )
    w.table(
        sec, "iavg", _iavg_table(intra, inter, g_intra, global_name, intra_l, layer_names, kinds)
    )
    ratio = A.within_class_variance_ratio(intra_l, labels, kinds, n_classes, len(VARIANTS))
    w.table(
        sec,
        "layers_separation",
        A.Table(
            "Addition (ours): which layers separate the variants, within class",
            ["layer", "between / within variance of intra-class I_l_avg"],
            [[n, float(r)] for n, r in zip(layer_names, ratio, strict=True)],
            "Per class: variance of the variant means over the mean variance inside the "
            "variants; averaged over the classes (NaN with fewer than 2 test images per "
            "class and variant). Differences between classes do not enter.",
        ),
    )
    profiles, group_names = A.group_profiles(intra_l, labels, kinds, names, VARIANTS)
    linkage = A.cluster_profiles(profiles)
    w.figure(sec, "joint_dendrogram", P.plot_dendrogram(linkage, group_names)[0])
    cut = A.clusters(linkage, min(4, len(group_names)))
    w.table(sec, "joint_composition", _composition(cut, group_names))
    w.table(sec, "per_image", _per_image_table(rows_t, row_names, v, pred, intra, names))
    s.update(ratio=ratio, rows_t=rows_t, row_names=row_names, t1=t1, t3=t3, t2=t2)

    found, method = findings(s)
    summary["findings"] = found
    w.sections[1]["findings"] = method
    write_atomic(out_dir / "sections.json", json.dumps(w.sections, indent=1))
    return found


def _short(method: str) -> str:
    if "Gauss-Newton" in method:
        return "Eq. 5, Gauss-Newton"
    if "true Hessian" in method:
        return "Eq. 5, true Hessian"
    return "Eq. 5"


def _gallery(w, s, cfg, d, v, compound, pred, names) -> None:
    n_test = len(d["test_labels"])
    picks = [i + k * n_test for i in range(min(2, n_test)) for k in range(len(VARIANTS))]
    train_x, train_y = d["train_images"], d["train_labels"]
    own = v["labels"][picks][:, None] == train_y[None, :]
    top = compound[picks].masked_fill(~own, float("-inf")).topk(cfg.top_k, dim=1)
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
        "Addition (ours): per test image, class of the top image over the whole training set",
        ["image", "variant", "true", "predicted", "intra I_avg", *row_names],
        body,
        "Class of the most influential training image (argmax over all training images) per "
        "layer and compound (and global where computed).",
    )


def _iavg_table(intra, inter, g_intra, global_name, intra_l, layer_names, kinds) -> A.Table:
    rows = []
    for k, name in enumerate(VARIANTS):
        sel = kinds == k
        row = [name, float(intra[sel].mean()), A.sem(intra[sel])]
        row += [float(inter[sel].mean()), A.sem(inter[sel])]
        if g_intra is not None:
            row.append(float(g_intra[sel].mean()))
        row += [float(intra_l[j, sel].mean()) for j in range(len(layer_names))]
        rows.append(row)
    columns = ["variant", "intra I_avg", "SEM", "inter I_avg", "SEM"]
    if g_intra is not None:
        columns.append(f"{global_name} intra I_avg")
    columns += [f"I_l_avg {n}" for n in layer_names]
    return A.Table(
        "Addition (ours): average influence per variant, pooled over classes",
        columns,
        rows,
        "Intra: mean compound score of the training images of the test image's own class; "
        "inter: of the other classes; I_l_avg per layer (intra). Pooling over classes mixes "
        "magnitudes that differ between classes.",
    )


def _first_merges(trees, names) -> A.Table:
    rows = []
    for c, (link, vnames) in trees.items():
        merges = A.merge_sets(link, vnames)
        first = sorted(merges[0])
        rows.append([names[c], " + ".join(first), float(link[0, 2])])
    return A.Table(
        "Fig. 8: first merge of each class's dendrogram",
        ["class", "first merged variants", "Euclidean distance"],
        rows,
        "The two variants whose I_l_avg profiles are closest (average linkage, Euclidean): "
        "the paper finds original and white background merged first.",
    )


def _composition(cut, group_names) -> A.Table:
    rows = []
    for c in sorted(set(cut.tolist())):
        members = [n for n, k in zip(group_names, cut, strict=True) if k == c]
        counts = {name: sum(m.endswith(f"| {name}") for m in members) for name in VARIANTS}
        rows.append([int(c), len(members), *counts.values()])
    return A.Table(
        "Addition (ours): joint clustering of all (class, variant) profiles",
        ["cluster", "groups", *VARIANTS],
        rows,
        "All classes in one tree, cut into at most 4 clusters; counts of each variant per "
        "cluster. Influence magnitudes differ between classes, so this tree tends to group "
        "by class; the paper clusters each class on its own (Fig. 8).",
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
            "Predicted class (its probability) for each cell of the sweep. % texture is our "
            "definition: the share s of the transfer loss (1 - s) content + s Gram.",
        )
        w.table(s, f"sweep_predictions_{i}", table)


def _shap(w, s, out_dir, shap) -> None:
    from ..shapley import BidirectionalResult, plot_bidirectional

    result = BidirectionalResult.load(out_dir / "stages" / shap["path"])
    for j in range(len(result.labels)):
        fig, _ = plot_bidirectional(result, j)
        w.figure(s, f"shap_{j}", fig)
