"""The report's sections, in order: `SECTIONS` lists `(key, title, guide, function)`.

A section function takes the `Analysis` and a `SectionWriter` and saves its tables and
figures through the writer. To add a figure to the report, write the function and add a
`Section` entry here; `analyse` runs every entry and writes `sections.json`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

from .._utils.plotting import detached_figures
from . import _paper_sections as P
from ._additions import additions
from ._analysis import Analysis, SectionWriter
from ._findings import findings, method_lines
from ._io import write_atomic
from ._results import StudyResults
from .config import StudyConfig


@dataclass(frozen=True)
class Section:
    """One section of the report.

    Attributes:
        key: Its id (the HTML anchor).
        title: Its heading.
        guide: How to read it, shown under the heading.
        write: Saves its tables and figures: `write(analysis, writer)`.
    """

    key: str
    title: str
    guide: str
    write: Callable[[Analysis, SectionWriter], None]


def summary(a: Analysis, w: SectionWriter) -> None:
    """The findings, each with its verdict."""
    w.findings(findings(a))


def method(a: Analysis, w: SectionWriter) -> None:
    """What ran, and the choices that are ours."""
    w.findings(method_lines(a))


SECTIONS: tuple[Section, ...] = (
    Section(
        "summary",
        "Summary: which of the paper's findings reproduce",
        (
            "Each of the paper's findings, with the numbers of this run and whether it "
            "reproduces (the criterion is stated where the paper gives none). Read them as "
            "hypotheses to check against the sections below."
        ),
        summary,
    ),
    Section(
        "method",
        "What ran, and what is our choice",
        (
            "Which curvature the layer-wise and the global influence used, how the run was "
            "made reproducible, and the definitions that are ours where the paper leaves them "
            "open."
        ),
        method,
    ),
    Section(
        "table1",
        "Table 1: how each disturbance is classified",
        (
            "Each test image is shown in four variants: original, on a white background "
            "(object only), with another class's texture transferred onto the object, and "
            "style-transferred (both built on the white-background image). The paper reports "
            "'Top 5 probability values' without defining them further; our metric is the "
            "probability of the true class when it is among the five most probable classes, "
            "else 0, averaged with its standard error. A model that relies on the object "
            "keeps its accuracy on white backgrounds; one that relies on texture loses it on "
            "textured images."
        ),
        P.table1,
    ),
    Section(
        "table3",
        "Table 3: texture patches, and objects given another class's texture",
        (
            "Left: a patch of pure texture, no shape. A texture-driven classifier names the "
            "class whose texture it is. Right: the textured variant puts class A's object in "
            "class B's texture: 'as texture' counts predictions of B, 'as content' "
            "predictions of A."
        ),
        P.table3,
    ),
    Section(
        "table2",
        "Table 2: intra-class influential images, average influence score",
        (
            "The paper's Table 2: for each variant and class, the most influential training "
            "image among the training images of the test image's OWN class (intra-class, by "
            "the compound score I_total, the sum over layers), how the test images are "
            "classified, and the average influence score I_avg, the mean I_total over the "
            "class's training images. Scores are proponents when positive: removing them "
            "would raise the test loss."
        ),
        P.table2,
    ),
    Section(
        "gallery",
        "Fig. 2: test images beside their intra-class influential images",
        (
            "The paper's Fig. 2: each row a test image (variant, true → predicted class) and "
            "its most influential training images of its own class by compound influence, "
            "with their scores."
        ),
        P.gallery,
    ),
    Section(
        "ranges",
        "Figs. 3, 4: intra-class I_avg, correct and incorrect predictions",
        (
            "Every test image's intra-class I_avg by class and variant, split into correct "
            "and incorrect predictions (the paper's Figs. 3 and 4). Red dotted: the median "
            "over all images (the mean of the two middle values for an even count); green and "
            "blue: the maximum and minimum."
        ),
        P.ranges,
    ),
    Section(
        "interclass",
        "Fig. 7: influence of each other class's training set",
        (
            "The paper's Fig. 7: for each test class (panel), the I_avg of its test images "
            "over the training images of every OTHER class (x axis), coloured by variant; "
            "hollow markers are incorrect predictions. Red dotted: the panel's median; green "
            "and blue: its maximum and minimum."
        ),
        P.interclass,
    ),
    Section(
        "clustering",
        "Fig. 8: per class, clustering of the variants' layer profiles",
        (
            "The paper's Fig. 8, per class: each variant's vector of intra-class I_l_avg over "
            "the layers (the mean over the class's test images of that variant: our pooling), "
            "clustered with average linkage on Euclidean distances (four leaves), beside the "
            "Pearson correlation distance between the vectors. The paper finds original and "
            "white background in one cluster, styled and textured apart."
        ),
        P.clustering,
    ),
    Section(
        "layers",
        "Fig. 9: per class, mean intra-class influence per layer",
        (
            "The paper's Fig. 9, per class: the mean intra-class influence of each layer, one "
            "line per variant. The paper finds textured images peaking toward the last "
            "layers."
        ),
        P.layers,
    ),
    Section(
        "sweep",
        "Fig. 6: texture sweep",
        (
            "The paper's Fig. 6: one white-background test image given another class's "
            "texture at increasing strength (rows; our definition: the share s of the "
            "transfer loss (1 - s) content + s Gram, from 0 to 1) and transfer iterations "
            "(columns), with the model's probability of the true class and the intra-class "
            "influence."
        ),
        P.sweep,
    ),
    Section(
        "shap",
        "Fig. 10: SHAP maps beside influential training images",
        (
            "Test side: SHAP values of the test image's pixels for the predicted class (red "
            "raises the class score, blue lowers it). Training side: the most influential "
            "training images for the compound score and a few layers. Bidirectional reading: "
            "does the model look at the object, and are its proponents images of the same "
            "object or the same texture?"
        ),
        P.shap,
    ),
    Section(
        "additions",
        "Additions (ours, not in the paper)",
        (
            "Not in the paper. The class of the most influential image over the WHOLE "
            "training set per layer, compound and global (where computed); I_avg and I_l_avg "
            "pooled over classes; the ratio of between- to within-variant variance of I_l_avg "
            "computed within each class; and all (class, variant) profiles clustered in one "
            "tree, which groups by class because influence magnitudes differ between classes."
        ),
        additions,
    ),
)


def analyse(config: StudyConfig, results: StudyResults, out_dir: Path) -> list[str]:
    """Writes every section's tables and figures and `sections.json`; returns the findings.

    Figures are drawn without pyplot or a backend (`detached_figures`), and text is drawn
    literally: a class name such as "$x$" is not read as mathtext.
    """
    for sub in ("tables", "figures"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    a = Analysis(config, results)
    written = []
    with detached_figures(), matplotlib.rc_context({"text.parse_math": False}):
        for section in SECTIONS:
            writer = SectionWriter(out_dir, section.key, section.title, section.guide)
            section.write(a, writer)
            written.append(writer.to_json())
    write_atomic(out_dir / "sections.json", json.dumps(written, indent=1))
    return findings(a)
