"""The report's last section: our additions to the paper's analyses (tables and a tree)."""

from __future__ import annotations

import torch

from .. import analysis as A
from ..analysis import plots as P
from ._analysis import Analysis, SectionWriter


def top_class_table(a: Analysis) -> A.Table:
    """Class of the top image over the whole training set, per row, against two references."""
    rows = torch.stack(list(a.top_rows.values()))
    refs = {"true class": a.labels, "texture class": a.results.variants.texture_labels}
    return A.top_class_table(rows, list(a.top_rows), a.kinds, a.variants, refs)


def iavg_table(a: Analysis) -> A.Table:
    """I_avg (intra, inter, global) and I_l_avg per variant, pooled over classes."""
    g_intra = None
    if a.global_scores is not None:
        by_class = A.class_average(a.global_scores, a.train_labels, len(a.names))
        g_intra = A.intra_inter(by_class, a.labels)[0]
    columns = ["variant", "intra I_avg", "SEM", "inter I_avg", "SEM"]
    if g_intra is not None:
        columns.append(f"{a.global_name} intra I_avg")
    columns += [f"I_l_avg {n}" for n in a.layer_names]
    rows = []
    for k, name in enumerate(a.variants):
        sel = a.kinds == k
        row = [name, float(a.intra[sel].mean()), A.sem(a.intra[sel])]
        row += [float(a.inter[sel].mean()), A.sem(a.inter[sel])]
        if g_intra is not None:
            row.append(float(g_intra[sel].mean()))
        row += [float(a.intra_l[j, sel].mean()) for j in range(len(a.layer_names))]
        rows.append(row)
    return A.Table(
        "Addition (ours): average influence per variant, pooled over classes",
        columns,
        rows,
        "Intra: mean compound score of the training images of the test image's own class; "
        "inter: of the other classes; I_l_avg per layer (intra). Pooling over classes mixes "
        "magnitudes that differ between classes.",
    )


def separation_table(a: Analysis) -> A.Table:
    """Per layer, how well its influence separates the variants within a class."""
    return A.Table(
        "Addition (ours): which layers separate the variants, within class",
        ["layer", "between / within variance of intra-class I_l_avg"],
        [[n, float(r)] for n, r in zip(a.layer_names, a.separation, strict=True)],
        "Per class: variance of the variant means over the mean variance inside the "
        "variants; averaged over the classes (NaN with fewer than 2 test images per "
        "class and variant). Differences between classes do not enter.",
    )


def composition_table(a: Analysis, cut, group_names: list[str]) -> A.Table:
    """Counts of each variant in each cluster of the joint tree."""
    rows = []
    for c in sorted(set(cut.tolist())):
        members = [n for n, k in zip(group_names, cut, strict=True) if k == c]
        counts = [sum(m.endswith(f"| {name}") for m in members) for name in a.variants]
        rows.append([int(c), len(members), *counts])
    return A.Table(
        "Addition (ours): joint clustering of all (class, variant) profiles",
        ["cluster", "groups", *a.variants],
        rows,
        "All classes in one tree, cut into at most 4 clusters; counts of each variant per "
        "cluster. Influence magnitudes differ between classes, so this tree tends to group "
        "by class; the paper clusters each class on its own (Fig. 8).",
    )


def per_image_table(a: Analysis) -> A.Table:
    """Per test image: variant, classes, intra I_avg and the top image's class per row."""
    v = a.results.variants
    body = [
        [
            i,
            a.variants[int(v.variants[i])],
            a.names[int(v.labels[i])],
            a.names[int(a.pred[i])],
            float(a.intra[i]),
            *[a.names[int(top[i])] for top in a.top_rows.values()],
        ]
        for i in range(len(v.labels))
    ]
    return A.Table(
        "Addition (ours): per test image, class of the top image over the whole training set",
        ["image", "variant", "true", "predicted", "intra I_avg", *a.top_rows],
        body,
        "Class of the most influential training image (argmax over all training images) per "
        "layer and compound (and global where computed).",
    )


def additions(a: Analysis, w: SectionWriter) -> None:
    """Our additions: whole-set top class, pooled I_avg, separation, the joint tree."""
    w.table("whole_set_top_class", top_class_table(a))
    w.table("iavg", iavg_table(a))
    w.table("layers_separation", separation_table(a))
    profiles, group_names = A.group_profiles(a.intra_l, a.labels, a.kinds, a.names, a.variants)
    linkage = A.cluster_profiles(profiles)
    w.figure("joint_dendrogram", P.plot_dendrogram(linkage, group_names)[0])
    cut = A.clusters(linkage, min(4, len(group_names)))
    w.table("joint_composition", composition_table(a, cut, group_names))
    w.table("per_image", per_image_table(a))
