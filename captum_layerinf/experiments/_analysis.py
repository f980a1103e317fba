"""What the report's sections read: `Analysis`, the study's derived quantities, and the writer.

`Analysis` is computed lazily, once per quantity, from the typed stage results; the
sections (see `_sections.SECTIONS`) and the findings read its fields by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .. import analysis as A
from ._results import StudyResults
from .config import StudyConfig

TOP_K = 5  # Table 1's "Top 5 probability values"


@dataclass(frozen=True)
class Analysis:
    """The study's tables and summaries, each computed on first use.

    Attributes:
        config: The run's configuration.
        results: Every stage's result.
    """

    config: StudyConfig
    results: StudyResults

    @property
    def names(self) -> list[str]:
        """Class names."""
        return list(self.results.data.class_names)

    @property
    def variants(self) -> list[str]:
        """Variant names, in the order of `kinds`' indices."""
        return list(self.results.variants.names)

    def kind(self, name: str) -> int | None:
        """Index of the variant `name`, None when the run does not have it."""
        return self.variants.index(name) if name in self.variants else None

    @property
    def labels(self) -> Tensor:
        """True class of each variant image `[n]`."""
        return self.results.variants.labels

    @property
    def kinds(self) -> Tensor:
        """Variant index of each variant image `[n]`."""
        return self.results.variants.variants

    @property
    def train_labels(self) -> Tensor:
        """Classes of the training images `[n_train]`."""
        return self.results.data.train_labels

    @property
    def layer_names(self) -> list[str]:
        """The influence's layers."""
        return list(self.results.influence.layer_names)

    @cached_property
    def pred(self) -> Tensor:
        """Predicted class of each variant image `[n]`."""
        return self.results.predictions.probs.argmax(1)

    @cached_property
    def correct(self) -> Tensor:
        """Whether each prediction is right `[n]`."""
        return self.pred == self.labels

    @cached_property
    def layer_scores(self) -> Tensor:
        """Layer-wise scores `[n_layers, n, n_train]`, float64."""
        return self.results.influence.scores.double()

    @cached_property
    def compound(self) -> Tensor:
        """Compound scores I_total `[n, n_train]` (Eq. 7)."""
        return self.layer_scores.sum(0)

    @cached_property
    def global_scores(self) -> Tensor | None:
        """Global scores `[n, n_train]` (Eq. 5), None when not computed."""
        scores = self.results.global_influence.scores.double()
        return scores if scores.numel() else None

    @property
    def global_name(self) -> str:
        """Label of the global scores' row."""
        method = self.results.global_influence.method
        short = (
            "Eq. 5, Gauss-Newton"
            if "Gauss-Newton" in method
            else "Eq. 5, true Hessian"
            if "true Hessian" in method
            else "Eq. 5"
        )
        return f"global ({short})"

    @cached_property
    def class_avg(self) -> Tensor:
        """I_avg of each test image per training class `[n, n_classes]` (compound)."""
        return A.class_average(self.compound, self.train_labels, len(self.names))

    @cached_property
    def intra_l(self) -> Tensor:
        """Intra-class I_l_avg `[n_layers, n]`."""
        per_layer = A.class_average(self.layer_scores, self.train_labels, len(self.names))
        return A.intra_inter(per_layer, self.labels)[0]

    @cached_property
    def intra(self) -> Tensor:
        """Intra-class I_avg `[n]` (compound)."""
        return A.intra_inter(self.class_avg, self.labels)[0]

    @cached_property
    def inter(self) -> Tensor:
        """Inter-class I_avg `[n]` (compound)."""
        return A.intra_inter(self.class_avg, self.labels)[1]

    @cached_property
    def accuracy(self) -> A.Table:
        """Table 1: per class and variant, top-5 probability of the true class and accuracy."""
        probs = self.results.predictions.probs
        return A.accuracy_table(probs, self.labels, self.kinds, self.variants, self.names, TOP_K)

    @cached_property
    def cue_conflict(self) -> A.Table:
        """Table 3b: the textured images classified by shape or by texture."""
        textured = self.kinds == self.kind("textured")
        v = self.results.variants
        return A.cue_conflict_table(
            self.pred[textured], self.labels[textured], v.texture_labels[textured], self.names
        )

    @cached_property
    def trees(self) -> dict[int, tuple[np.ndarray, list[str]]]:
        """Per class with at least two variants: `(linkage, variant names)` of Fig. 8."""
        trees = {}
        for c in range(len(self.names)):
            profiles, present = A.class_profiles(
                self.intra_l, self.labels, self.kinds, c, len(self.variants)
            )
            if len(present) >= 2:
                trees[c] = (A.cluster_profiles(profiles), [self.variants[k] for k in present])
        return trees

    @cached_property
    def layer_means(self) -> Tensor:
        """Fig. 9: mean intra-class I_l_avg `[n_classes, n_variants, n_layers]` (NaN: empty)."""
        shape = (len(self.names), len(self.variants), len(self.layer_names))
        means = torch.full(shape, float("nan"))
        for c in range(shape[0]):
            for k in range(shape[1]):
                sel = (self.labels == c) & (self.kinds == k)
                if sel.any():
                    means[c, k] = self.intra_l[:, sel].mean(1).float()
        return means

    @cached_property
    def separation(self) -> Tensor:
        """Per layer, between- over within-variant variance of I_l_avg, within class."""
        return A.within_class_variance_ratio(
            self.intra_l, self.labels, self.kinds, len(self.names), len(self.variants)
        )

    @cached_property
    def top_rows(self) -> dict[str, Tensor]:
        """Class of the top training image over the whole set, per row `[n]`.

        Rows: each layer, "compound", and the global row where computed.
        """
        rows = dict(
            zip(self.layer_names, A.top_class(self.layer_scores, self.train_labels), strict=True)
        )
        rows["compound"] = A.top_class(self.compound, self.train_labels)
        if self.global_scores is not None:
            rows[self.global_name] = A.top_class(self.global_scores, self.train_labels)
        return rows


@dataclass
class SectionWriter:
    """Saves one section's tables and figures under `out_dir` and lists them for the report.

    Attributes:
        out_dir: The run's folder (tables go to `tables/`, figures to `figures/`).
        key: The section's key.
        title: Its heading.
        guide: How to read it.
    """

    out_dir: Path
    key: str
    title: str
    guide: str
    tables: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def table(self, name: str, table: A.Table) -> None:
        """Saves `table` as `tables/<name>.json`."""
        table.save(self.out_dir / "tables" / f"{name}.json")
        self.tables.append(f"tables/{name}.json")

    def figure(self, name: str, fig) -> None:
        """Saves `fig` as `figures/<name>.png`."""
        fig.savefig(self.out_dir / "figures" / f"{name}.png", dpi=110)
        self.figures.append(f"figures/{name}.png")

    def findings(self, lines: list[str]) -> None:
        """One-line findings listed under the guide."""
        self.lines.extend(lines)

    def to_json(self) -> dict:
        """The entry of `sections.json` that the report reads."""
        entry = {
            "key": self.key,
            "title": self.title,
            "guide": self.guide,
            "tables": self.tables,
            "figures": self.figures,
        }
        if self.lines:
            entry["findings"] = self.lines
        return entry
