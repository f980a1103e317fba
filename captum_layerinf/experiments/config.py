"""The configuration of a disturbance study: a frozen dataclass saved beside the results."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class StudyConfig:
    """Every knob of `DisturbanceStudy`, with defaults that run on 2 CPU cores in minutes.

    Attributes:
        data: "shapes" (embedded, generated), "imagefolder" (`data_path` with `train/` and
            `test/` ImageFolder trees) or "cifar10" (`data_path` holds the extracted
            `cifar-10-batches-py`).
        data_path: Folder of the user's data; unused for "shapes".
        size: Image side in pixels.
        n_train_per_class: Training images per class (shapes; a cap for the others).
        n_test_per_class: Test images per class, each shown in every variant.
        model: "shapes_cnn" (trained here), or a torchvision model name ("resnet18", ...)
            loaded from `weights` and not trained.
        weights: Local state-dict path for the model (never downloaded); with "shapes_cnn"
            it replaces training.
        width: Channels of the first convolutions of "shapes_cnn" (doubled twice further on).
        epochs: Training epochs of "shapes_cnn".
        lr: Adam learning rate.
        train_batch_size: Mini-batch size of training.
        texture_steps: L-BFGS steps of the texture transfer onto the white-background images.
        style_steps: L-BFGS steps of the style transfer.
        style: Offline style image name (see `transforms.available_images()`) or a path.
        style_weight: Weight of the Gram (style) loss against the content loss.
        hessian: Curvature strategy of the layer-wise influence ("exact", "ekfac", "cg", ...).
        global_hessian: Curvature of the global (all-parameter) influence: "gauss-newton"
            (the dense Gauss-Newton matrix Jᵀ Λ J of all parameters, factorised once:
            exact for the layer blocks of a ReLU network, the cross-layer second-order
            terms left out; feasible to ~15 k parameters), or a strategy name ("cg" for
            the true Hessian, one pass over the data per iteration and test image batch).
        damping: λ of `(H + λ I)⁻¹`.
        top_k: Influential training images kept per test image.
        shap_explainer: "gradient", "deep" or "partition".
        shap_background: Training images used as SHAP background.
        shap_images: Test images (of the original variant) shown with SHAP maps.
        sweep_strengths: Texture fractions of the texture sweep (Fig. 6).
        sweep_steps: Transfer iterations of the texture sweep.
        sweep_images: Test images swept.
        seed: Seed of data, initialisation, transforms and SHAP.
        show_progress: Progress bars.
    """

    data: str = "shapes"
    data_path: str | None = None
    size: int = 32
    n_train_per_class: int = 250
    n_test_per_class: int = 5
    model: str = "shapes_cnn"
    weights: str | None = None
    width: int = 8
    epochs: int = 12
    lr: float = 5e-3
    train_batch_size: int = 32
    texture_steps: int = 30
    style_steps: int = 30
    style: str = "brush_strokes"
    style_weight: float = 1.0
    hessian: str = "exact"
    global_hessian: str = "gauss-newton"
    damping: float = 1e-2
    top_k: int = 3
    shap_explainer: str = "gradient"
    shap_background: int = 32
    shap_images: int = 4
    sweep_strengths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    sweep_steps: tuple[int, ...] = (5, 10, 20, 40)
    sweep_images: int = 1
    seed: int = 0
    show_progress: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        if self.data not in ("shapes", "imagefolder", "cifar10"):
            raise ValueError(
                f"data must be 'shapes', 'imagefolder' or 'cifar10'; got {self.data!r}."
            )
        if self.data != "shapes" and not self.data_path:
            raise ValueError(f"data={self.data!r} needs data_path, the folder of your data.")
        if self.model != "shapes_cnn" and not self.weights:
            raise ValueError(
                f"model={self.model!r} needs weights, a local state-dict path (nothing is "
                "downloaded)."
            )
        for name in ("n_train_per_class", "n_test_per_class", "top_k", "shap_background"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}.")
        object.__setattr__(self, "sweep_strengths", tuple(self.sweep_strengths))
        object.__setattr__(self, "sweep_steps", tuple(self.sweep_steps))

    def to_dict(self) -> dict:
        """The configuration as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Writes the configuration as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        """Reads a configuration written by `save` (or by hand); unknown keys are an error."""
        values = json.loads(Path(path).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown} in {path}; valid keys: {sorted(known)}.")
        return cls(**values)

    def same_run(self, other: StudyConfig) -> bool:
        """Whether `other` computes the same results (progress bars do not count)."""
        return self == other


def tiny_config(**changes) -> StudyConfig:
    """A configuration small enough for a test: the whole study in well under a minute."""
    values = dict(
        n_train_per_class=12,
        width=4,
        n_test_per_class=1,
        epochs=3,
        texture_steps=2,
        style_steps=2,
        shap_background=4,
        shap_images=2,
        sweep_strengths=(0.0, 1.0),
        sweep_steps=(1, 2),
        show_progress=False,
    )
    values.update(changes)
    return StudyConfig(**values)
