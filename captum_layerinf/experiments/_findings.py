"""The study's one-line findings: each paper finding with "reproduces" or "does not".

`PAPER_FINDINGS` lists one function per finding of the paper, each reading the `Analysis`
by field and its tables by column name; `findings` runs them, then our additions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..analysis.plots import middle
from ._analysis import Analysis
from ._results import PAPER_VARIANTS


def _verdict(ok: bool) -> str:
    return "reproduces" if ok else "does not reproduce"


def _share(x: Tensor) -> float:
    return float(x.double().mean()) if x.numel() else float("nan")


def _top1(a: Analysis) -> dict[str, float]:
    """Top-1 accuracy of each variant over all classes (Table 1's "all classes" rows)."""
    return {
        r["variant"]: r["top-1 acc"] for r in a.accuracy.records() if r["class"] == "all classes"
    }


def method_lines(a: Analysis) -> list[str]:
    """What ran, and the choices that are ours where the paper is silent."""
    cfg = a.config
    return [
        f"Layer-wise influence: hessian={cfg.hessian!r}, damping {cfg.damping}. Global "
        f"influence: {a.results.global_influence.method} "
        f"(global_hessian={cfg.global_hessian!r}).",
        f"Torch ran on {cfg.num_threads} thread(s) throughout (configuration key "
        "num_threads): floating-point sums, and so training and every finding, do not depend "
        "on the machine's core count. Another CPU type or torch version may still change "
        "the last bits, and training amplifies them.",
        "Our choices where the paper is silent: Table 1's metric is the true class's "
        "probability where it is among the top 5, else 0, averaged with its SEM; the texture "
        "percentage is the share s of the transfer loss (1 - s) content + s Gram, and the "
        f"textured variant uses s = {cfg.texture_strength} with {cfg.texture_steps} steps "
        "(the object's own pattern still shows; at s = 1 it is pure texture synthesis "
        "inside the silhouette); a group of test images is pooled by the mean of their "
        "I_l_avg (Fig. 8, 9); in Table 2 a group's influential image is the argmax of its "
        "summed compound score.",
        "Table 2 and Fig. 2 take the argmax over the test image's own class, Fig. 7, 8 and 9 "
        "are per class, as in the paper. The whole-training-set argmax, the joint clustering, "
        "the pooled I_avg table and the between/within ratio are our additions (last "
        "section).",
    ]


def accuracy_line(a: Analysis) -> str:
    """Top-1 accuracy of every variant."""
    acc = _top1(a)
    return "Top-1 accuracy: " + ", ".join(f"{n} {acc[n]:.0%}" for n in a.variants if n in acc) + "."


def white_like_original(a: Analysis) -> str:
    """Table 1: white-background images are classified like the originals."""
    acc = _top1(a)
    o, w = acc.get("original", 0), acc.get("white background", 0)
    return (
        f"Table 1, white background classified like the original: top-1 {w:.0%} vs {o:.0%} "
        f"({_verdict(w >= o - 0.1)}; criterion: within 10 points)."
    )


def textured_misclassified(a: Analysis) -> str:
    """Table 1: textured images are misclassified."""
    t = _top1(a).get("textured", 0)
    return (
        f"Table 1, textured images misclassified (paper: 0 % correct): top-1 {t:.0%} "
        f"({_verdict(t <= 0.1)}; criterion: at most 10 %)."
    )


def classified_by_texture(a: Analysis) -> str:
    """Table 3: textured objects are named after their texture, not their shape."""
    overall = next(r for r in a.cue_conflict.records() if r["content class"] == "all classes")
    texture, content = overall["as texture"], overall["as content"]
    return (
        f"Table 3, textured objects classified by their texture: as texture {texture:.0%}, "
        f"as their shape's class {content:.0%} ({_verdict(texture > content)})."
    )


def patches_named(a: Analysis) -> str:
    """Table 3: texture patches alone are named as their class."""
    tp = a.results.predictions.texture_probs.argmax(1)
    hits = int((tp == torch.arange(len(tp))).sum())
    return (
        f"Table 3, texture patches alone named as their class: {hits} of {len(tp)} "
        f"({_verdict(2 * hits > len(tp))}; criterion: a majority)."
    )


def white_closer_than_textured(a: Analysis) -> str:
    """Table 2: I_avg of white-background images is closer to the original's than textured."""
    kinds = [a.kind(n) for n in ("original", "white background", "textured")]
    closer, counted = 0, 0
    for c in range(len(a.names)):
        groups = [(a.labels == c) & (a.kinds == k) for k in kinds]
        if all(g.any() for g in groups):
            orig, white, textured = (a.intra[g].mean() for g in groups)
            counted += 1
            closer += int(abs(white - orig) < abs(textured - orig))
    return (
        "Table 2, I_avg of white-background images close to the original's, of textured ones "
        f"far from it: white closer than textured in {closer} of {counted} classes "
        f"({_verdict(2 * closer > counted)})."
    )


def correct_above_median(a: Analysis) -> str:
    """Figs. 3, 4: correct predictions lie above the median intra-class I_avg."""
    median = middle(a.intra)
    above = _share(a.intra[a.correct] >= median)
    below = _share(a.intra[~a.correct] < median)
    wrong = ~a.correct
    return (
        "Figs. 3, 4, correct predictions at or above the median intra-class I_avg, incorrect "
        f"ones below: {above:.0%} of {int(a.correct.sum())} correct above, {below:.0%} of "
        f"{int(wrong.sum())} incorrect below "
        f"({_verdict(above > 0.5 and (below > 0.5 or not wrong.any()))})."
    )


def original_and_white_merge_first(a: Analysis) -> str:
    """Fig. 8: original and white background merge first in each class's tree."""
    together = 0
    for link, vnames in a.trees.values():
        first = {vnames[int(link[0, 0])], vnames[int(link[0, 1])]}
        together += first == {"original", "white background"}
    n = len(a.trees)
    return (
        "Fig. 8, original and white background merge first in each class's dendrogram: "
        f"{together} of {n} classes ({_verdict(2 * together > n)})."
    )


def textured_differ_late(a: Analysis) -> str:
    """Fig. 9: textured images differ from the originals most toward the last layers."""
    orig, textured = a.kind("original"), a.kind("textured")
    n_classes, n_layers = len(a.names), len(a.layer_names)
    late = 0
    for c in range(n_classes):
        diff = (a.layer_means[c, textured] - a.layer_means[c, orig]).abs()
        late += int(diff.nan_to_num(-1).argmax() >= n_layers - max(1, n_layers // 3))
    return (
        "Fig. 9, textured images differ from the originals most toward the last layers: the "
        f"largest difference lies in the last third of the layers in {late} of {n_classes} "
        f"classes ({_verdict(2 * late > n_classes)})."
    )


PAPER_FINDINGS: tuple[Callable[[Analysis], str], ...] = (
    white_like_original,
    textured_misclassified,
    classified_by_texture,
    patches_named,
    white_closer_than_textured,
    correct_above_median,
    original_and_white_merge_first,
    textured_differ_late,
)


def addition_lines(a: Analysis) -> list[str]:
    """Our findings: the whole-set top image of textured images, the separating layers."""
    v, tex = a.results.variants, a.results.data.train_texture_labels
    textured = a.kinds == a.kind("textured")
    comp = a.top_rows["compound"][textured]
    found = [
        "Ours: for the textured images the most influential image over the whole training "
        "set (compound) is of the texture's class in "
        f"{_share(comp == v.texture_labels[textured]):.0%} and of the object's class in "
        f"{_share(comp == v.labels[textured]):.0%} of cases."
    ]
    if tex is not None:
        top = a.compound[textured].argmax(1)
        same = tex[top] == v.texture_labels[textured]
        both = same & (a.train_labels[top] == v.labels[textured])
        found.append(
            f"Ours: {_share(same):.0%} of those top training images carry the same texture as "
            f"the textured test image; {_share(both):.0%} are of the object's class AND carry "
            "that texture."
        )
    ratio = a.separation
    if not ratio.isnan().all():
        order = ratio.nan_to_num(-1).argsort(descending=True)
        found.append(
            "Ours: layers whose influence separates the variants most within a class "
            "(between / within variance): "
            + ", ".join(f"{a.layer_names[i]} ({float(ratio[i]):.2g})" for i in order[:3])
            + "."
        )
    return found


def findings(a: Analysis) -> list[str]:
    """Every finding of a study: accuracies, the paper's findings, then ours.

    The paper's findings compare its four variants; a run without one of them says so.
    """
    missing = [name for name in PAPER_VARIANTS if a.kind(name) is None]
    if missing:
        return [
            accuracy_line(a),
            f"The paper's findings compare its variants {list(PAPER_VARIANTS)}; this run "
            f"lacks {missing}, so they are not evaluated.",
        ]
    return [accuracy_line(a), *(f(a) for f in PAPER_FINDINGS), *addition_lines(a)]
