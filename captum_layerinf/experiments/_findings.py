"""The study's one-line findings: each paper finding with "reproduces" or "does not"."""

from __future__ import annotations

import torch
from torch import Tensor

from ..analysis.plots import middle
from ._variants import VARIANTS

ORIG, WHITE, TEXTURED, STYLED = range(4)


def _verdict(ok: bool) -> str:
    return "reproduces" if ok else "does not reproduce"


def _method(s: dict) -> list[str]:
    cfg, out = s["cfg"], s["out"]
    return [
        f"Layer-wise influence: hessian={cfg.hessian!r}, damping {cfg.damping}. Global "
        f"influence: {out['global'].get('method', 'not recorded')} "
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


def _share(x: Tensor) -> float:
    return float(x.double().mean()) if x.numel() else float("nan")


def findings(s: dict) -> tuple[list[str], list[str]]:
    """`(findings, method lines)` of a study from the analysis state `s`."""
    names, labels, kinds = s["names"], s["labels"], s["kinds"]
    correct, intra = s["correct"], s["intra"]
    n_classes = len(names)
    acc = {r[1]: r[5] for r in s["t1"].rows if r[0] == "all classes"}
    found = [
        "Top-1 accuracy: "
        + ", ".join(f"{name} {acc[name]:.0%}" for name in VARIANTS if name in acc)
        + "."
    ]
    o, w, t = acc.get("original", 0), acc.get("white background", 0), acc.get("textured", 0)
    found.append(
        f"Table 1, white background classified like the original: top-1 {w:.0%} vs {o:.0%} "
        f"({_verdict(w >= o - 0.1)}; criterion: within 10 points)."
    )
    found.append(
        f"Table 1, textured images misclassified (paper: 0 % correct): top-1 {t:.0%} "
        f"({_verdict(t <= 0.1)}; criterion: at most 10 %)."
    )
    overall = s["t3"].rows[-1]
    found.append(
        f"Table 3, textured objects classified by their texture: as texture {overall[3]:.0%}, "
        f"as their shape's class {overall[2]:.0%} ({_verdict(overall[3] > overall[2])})."
    )
    tp = s["out"]["predictions"]["texture_probs"].argmax(1)
    hits = int((tp == torch.arange(len(tp))).sum())
    found.append(
        f"Table 3, texture patches alone named as their class: {hits} of {len(tp)} "
        f"({_verdict(2 * hits > len(tp))}; criterion: a majority)."
    )
    closer, counted = 0, 0
    for c in range(n_classes):
        mean = {
            k: intra[(labels == c) & (kinds == k)].mean()
            for k in (ORIG, WHITE, TEXTURED)
            if ((labels == c) & (kinds == k)).any()
        }
        if len(mean) == 3:
            counted += 1
            closer += int(abs(mean[WHITE] - mean[ORIG]) < abs(mean[TEXTURED] - mean[ORIG]))
    found.append(
        "Table 2, I_avg of white-background images close to the original's, of textured ones "
        f"far from it: white closer than textured in {closer} of {counted} classes "
        f"({_verdict(2 * closer > counted)})."
    )
    median = middle(intra)
    above = _share(intra[correct] >= median)
    below = _share(intra[~correct] < median)
    found.append(
        "Figs. 3, 4, correct predictions at or above the median intra-class I_avg, incorrect "
        f"ones below: {above:.0%} of {int(correct.sum())} correct above, {below:.0%} of "
        f"{int((~correct).sum())} incorrect below "
        f"({_verdict(above > 0.5 and (below > 0.5 or not (~correct).any()))})."
    )
    together = sum(
        _first_merge(link, vnames) == {"original", "white background"}
        for link, vnames in s["trees"].values()
    )
    found.append(
        "Fig. 8, original and white background merge first in each class's dendrogram: "
        f"{together} of {len(s['trees'])} classes ({_verdict(2 * together > len(s['trees']))})."
    )
    means = s["layer_means"]
    n_layers = means.shape[-1]
    late = 0
    for c in range(n_classes):
        diff = (means[c, TEXTURED] - means[c, ORIG]).abs()
        late += int(diff.nan_to_num(-1).argmax() >= n_layers - max(1, n_layers // 3))
    found.append(
        "Fig. 9, textured images differ from the originals most toward the last layers: the "
        f"largest difference lies in the last third of the layers in {late} of {n_classes} "
        f"classes ({_verdict(2 * late > n_classes)})."
    )
    found += _additions(s)
    return found, _method(s)


def _first_merge(link, vnames) -> set[str]:
    a, b = int(link[0, 0]), int(link[0, 1])
    return {vnames[a], vnames[b]}


def _additions(s: dict) -> list[str]:
    v, out = s["out"]["variants"], s["out"]
    textured = s["kinds"] == TEXTURED
    comp = s["rows_t"][s["row_names"].index("compound"), textured]
    found = [
        "Ours: for the textured images the most influential image over the whole training "
        "set (compound) is of the texture's class in "
        f"{_share(comp == v['texture_labels'][textured]):.0%} and of the object's class in "
        f"{_share(comp == v['labels'][textured]):.0%} of cases."
    ]
    tex = out["data"].get("train_texture_labels")
    if tex is not None:
        top = s["compound"][textured].argmax(1)
        same = tex[top] == v["texture_labels"][textured]
        both = same & (s["train_labels"][top] == v["labels"][textured])
        found.append(
            f"Ours: {_share(same):.0%} of those top training images carry the same texture as "
            f"the textured test image; {_share(both):.0%} are of the object's class AND carry "
            "that texture."
        )
    ratio, layer_names = s["ratio"], s["layer_names"]
    if not ratio.isnan().all():
        order = ratio.nan_to_num(-1).argsort(descending=True)
        found.append(
            "Ours: layers whose influence separates the variants most within a class "
            "(between / within variance): "
            + ", ".join(f"{layer_names[i]} ({float(ratio[i]):.2g})" for i in order[:3])
            + "."
        )
    return found
