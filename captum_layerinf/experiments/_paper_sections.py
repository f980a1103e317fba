"""The report's sections that carry the paper's tables and figures, one function each.

Each function takes the `Analysis` and a `SectionWriter` and saves its tables and figures
through the writer; `_sections.SECTIONS` lists them with their titles and guides.
"""

from __future__ import annotations

import torch

from .. import analysis as A
from ..analysis import plots as P
from ..transforms import TextureSweep, plot_texture_sweep
from ._analysis import TOP_K, Analysis, SectionWriter


def table1(a: Analysis, w: SectionWriter) -> None:
    """Table 1 and its bars: top-5 probability of the true class per class and variant."""
    w.table("table1_accuracy", a.accuracy)
    by_group = {(r["class"], r["variant"]): r for r in a.accuracy.records()}
    shape = (len(a.names), len(a.variants))
    grid, err = torch.full(shape, float("nan")), torch.full(shape, float("nan"))
    for c, cname in enumerate(a.names):
        for k, vname in enumerate(a.variants):
            if (cname, vname) in by_group:
                grid[c, k] = by_group[cname, vname][f"top-{TOP_K} probability"]
                err[c, k] = by_group[cname, vname]["SEM"]
    w.figure("table1_accuracy", P.plot_accuracy(grid, err, a.names, a.variants)[0])


def table3(a: Analysis, w: SectionWriter) -> None:
    """Table 3: texture patches alone, and objects given another class's texture."""
    patches = A.texture_patch_table(a.results.predictions.texture_probs, a.names)
    w.table("table3_patches", patches)
    w.table("table3_conflict", a.cue_conflict)


def table2(a: Analysis, w: SectionWriter) -> None:
    """Table 2: intra-class influential images and I_avg per variant and class."""
    table = A.intra_class_table(
        a.compound, a.train_labels, a.labels, a.kinds, a.pred, a.names, a.variants
    )
    w.table("table2_intra_class", table)


def gallery(a: Analysis, w: SectionWriter) -> None:
    """Fig. 2: two test images per variant beside their top intra-class training images."""
    d, v = a.results.data, a.results.variants
    n_test = len(d.test_labels)
    picks = [i + k * n_test for i in range(min(2, n_test)) for k in range(len(a.variants))]
    own = v.labels[picks][:, None] == d.train_labels[None, :]
    top = a.compound[picks].masked_fill(~own, float("-inf")).topk(a.config.top_k, dim=1)
    names = a.names
    captions = [
        f"{a.variants[int(v.variants[i])]}\n{names[int(v.labels[i])]} →\n{names[int(a.pred[i])]}"
        for i in picks
    ]
    train_captions = [
        [
            f"{names[int(d.train_labels[j])]}\n{float(score):+.2g}"
            for j, score in zip(*row, strict=True)
        ]
        for row in zip(top.indices, top.values, strict=True)
    ]
    fig, _ = P.plot_gallery(v.images[picks], captions, d.train_images[top.indices], train_captions)
    w.figure("gallery", fig)


def ranges(a: Analysis, w: SectionWriter) -> None:
    """Figs. 3, 4: intra-class I_avg of correct and incorrect predictions."""
    fig, _ = P.plot_influence_ranges(a.intra, a.labels, a.kinds, a.correct, a.names, a.variants)
    w.figure("ranges_intra", fig)


def interclass(a: Analysis, w: SectionWriter) -> None:
    """Fig. 7: influence of each other class's training set, one panel per test class."""
    fig, _ = P.plot_inter_class(
        a.class_avg,
        a.labels,
        a.kinds,
        a.correct,
        a.names,
        a.variants,
        list(range(len(a.names))),
    )
    w.figure("interclass", fig)


def clustering(a: Analysis, w: SectionWriter) -> None:
    """Fig. 8: per class, the variants' layer profiles clustered, and the first merges."""
    per_class = []
    for c, (link, vnames) in a.trees.items():
        profiles, _ = A.class_profiles(a.intra_l, a.labels, a.kinds, c, len(a.variants))
        per_class.append((a.names[c], link, A.correlation_distance(profiles), vnames))
    if per_class:
        w.figure("clustering_per_class", P.plot_class_clustering(per_class)[0])
    rows = []
    for c, (link, vnames) in a.trees.items():
        first = sorted(A.merge_sets(link, vnames)[0])
        rows.append([a.names[c], " + ".join(first), float(link[0, 2])])
    table = A.Table(
        "Fig. 8: first merge of each class's dendrogram",
        ["class", "first merged variants", "Euclidean distance"],
        rows,
        "The two variants whose I_l_avg profiles are closest (average linkage, Euclidean): "
        "the paper finds original and white background merged first.",
    )
    w.table("clustering_first_merge", table)


def layers(a: Analysis, w: SectionWriter) -> None:
    """Fig. 9: per class, mean intra-class influence per layer, one line per variant."""
    fig, _ = P.plot_layer_means_per_class(a.layer_means, a.names, a.variants, a.layer_names)
    w.figure("layers_per_class", fig)


def _sweep_table(a: Analysis, i: int, label: int) -> A.Table:
    cfg, sweep = a.config, a.results.sweep
    probs = sweep.probs[i]
    pred = probs.argmax(-1)
    rows = [
        [f"{100 * strength:.0f}%"]
        + [
            f"{a.names[int(pred[s, b])]} ({float(probs[s, b, pred[s, b]]):.2f})"
            for b in range(len(cfg.sweep_steps))
        ]
        for s, strength in enumerate(cfg.sweep_strengths)
    ]
    return A.Table(
        f"Texture sweep of test image {int(sweep.indices[i])} ({a.names[label]})",
        ["% texture", *[f"{k} steps" for k in cfg.sweep_steps]],
        rows,
        "Predicted class (its probability) for each cell of the sweep. % texture is our "
        "definition: the share s of the transfer loss (1 - s) content + s Gram.",
    )


def sweep(a: Analysis, w: SectionWriter) -> None:
    """Fig. 6: each swept image's grid, its curves and its predictions."""
    cfg, sweep = a.config, a.results.sweep
    for i in range(len(sweep.indices)):
        label = int(a.results.data.test_labels[int(sweep.indices[i])])
        grid = TextureSweep(sweep.images[i], cfg.sweep_strengths, cfg.sweep_steps, torch.zeros(0))
        w.figure(f"sweep_images_{i}", plot_texture_sweep(grid)[0])
        fig, _ = P.plot_sweep(
            cfg.sweep_strengths,
            cfg.sweep_steps,
            sweep.probs[i][..., label],
            sweep.intra_influence[i],
        )
        w.figure(f"sweep_curves_{i}", fig)
        w.table(f"sweep_predictions_{i}", _sweep_table(a, i, label))


def shap(a: Analysis, w: SectionWriter) -> None:
    """Fig. 10: the bidirectional view of each explained image."""
    from ..shapley import BidirectionalResult, plot_bidirectional

    result = BidirectionalResult.load(w.out_dir / "stages" / a.results.shap.path)
    for j in range(len(result.labels)):
        w.figure(f"shap_{j}", plot_bidirectional(result, j)[0])
