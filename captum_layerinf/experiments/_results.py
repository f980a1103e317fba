"""What each stage of the study produces: one frozen dataclass per stage, read by field name.

A stage's result is stored on disk as the dict of its fields (`to_dict`), so
`torch.load(out_dir / "stages" / "<stage>.pt", weights_only=True)` reads it without this
package; `from_dict` turns it back into the dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from torch import Tensor

_R = TypeVar("_R", bound="StageResult")

PAPER_VARIANTS = ("original", "white background", "textured", "styled")


class StageResult:
    """Base of the stage results: conversion to and from the dict stored on disk."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (what `torch.save` writes)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(cast(Any, self))}

    @classmethod
    def from_dict(cls: type[_R], values: dict[str, Any], source: str | Path = "") -> _R:
        """The result from a stored dict; a missing field is an error naming the fix."""
        fields = dataclasses.fields(cast(Any, cls))
        missing = [f.name for f in fields if f.name not in values and _required(f)]
        if missing:
            raise ValueError(
                f"{source or cls.__name__}: the stored stage lacks {missing}; it was written "
                "by another version. Delete the file and rerun to recompute it."
            )
        return cls(**{f.name: values[f.name] for f in fields if f.name in values})


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@dataclass(frozen=True)
class Data(StageResult):
    """Stage "data": training and test images, test masks and one texture per class.

    Attributes:
        train_images: `[n_train, C, H, W]` in [0, 1].
        train_labels: `[n_train]`.
        test_images: `[n_test, C, H, W]`.
        test_labels: `[n_test]`.
        test_masks: `[n_test, H, W]` bool foreground masks.
        textures: `[n_classes, C, H, W]`, the texture of each class.
        class_names: Names of the classes.
        train_texture_labels: `[n_train]` class whose texture each training image carries
            (generated data only; None otherwise).
    """

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    test_masks: Tensor
    textures: Tensor
    class_names: list[str]
    train_texture_labels: Tensor | None = None


@dataclass(frozen=True)
class ModelState(StageResult):
    """Stage "model": the weights of the explained model (trained here or loaded)."""

    state_dict: dict[str, Tensor]


@dataclass(frozen=True)
class Variants(StageResult):
    """Stage "variants": every test image in every disturbance variant, variant by variant.

    Attributes:
        images: `[n_variants * n_test, C, H, W]`.
        labels: `[n_variants * n_test]` true classes.
        variants: `[n_variants * n_test]` index into `names`.
        texture_labels: `[n_variants * n_test]` class whose texture the image shows.
        masks: `[n_variants * n_test, H, W]` foreground masks.
        names: The variants' names, in the order of `variants`' indices (a stage stored
            before the names were recorded holds the paper's four).
    """

    images: Tensor
    labels: Tensor
    variants: Tensor
    texture_labels: Tensor
    masks: Tensor
    names: list[str] = field(default_factory=lambda: list(PAPER_VARIANTS))


@dataclass(frozen=True)
class Predictions(StageResult):
    """Stage "predictions": softmax outputs on the variants and on the class textures.

    Attributes:
        probs: `[n_variants * n_test, n_classes]`.
        texture_probs: `[n_classes, n_classes]`, row c for the texture of class c.
    """

    probs: Tensor
    texture_probs: Tensor


@dataclass(frozen=True)
class Influence(StageResult):
    """Stage "influence": layer-wise influence of every training image on every variant.

    Attributes:
        scores: `[n_layers, n_variants * n_test, n_train]`.
        layer_names: The layers' dotted names.
    """

    scores: Tensor
    layer_names: list[str]


@dataclass(frozen=True)
class GlobalInfluence(StageResult):
    """Stage "global": the all-parameter influence (Eq. 5), or an empty tensor.

    Attributes:
        scores: `[n_variants * n_test, n_train]`, or `[0]` when not computed.
        method: What ran, in words.
    """

    scores: Tensor
    method: str


@dataclass(frozen=True)
class Shap(StageResult):
    """Stage "shap": which variant images were explained, and the saved explanation.

    Attributes:
        indices: `[m]` indices into the variants' images.
        path: File name of the saved `BidirectionalResult`, inside `stages/`.
    """

    indices: Tensor
    path: str


@dataclass(frozen=True)
class Sweep(StageResult):
    """Stage "sweep": texture sweeps of a few test images (Fig. 6).

    Attributes:
        images: `[n_swept, n_strengths, n_steps, C, H, W]`.
        probs: `[n_swept, n_strengths, n_steps, n_classes]`.
        intra_influence: `[n_swept, n_strengths, n_steps]` intra-class I_avg (compound).
        indices: `[n_swept]` test image indices.
    """

    images: Tensor
    probs: Tensor
    intra_influence: Tensor
    indices: Tensor


@dataclass(frozen=True)
class StudyResults:
    """Every stage's result of one run, the input of the analyses.

    Attributes:
        data: Stage "data".
        model: Stage "model".
        variants: Stage "variants".
        predictions: Stage "predictions".
        influence: Stage "influence".
        global_influence: Stage "global".
        shap: Stage "shap".
        sweep: Stage "sweep".
    """

    data: Data
    model: ModelState
    variants: Variants
    predictions: Predictions
    influence: Influence
    global_influence: GlobalInfluence
    shap: Shap
    sweep: Sweep
