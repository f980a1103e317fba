"""The configuration of a disturbance study: a frozen dataclass saved beside the results."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._io import write_atomic


class ConfigError(ValueError):
    """A bad `StudyConfig` value; `key` names the field (None for the file as a whole)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


GLOBAL_HESSIANS = ("gauss-newton", "hessian", "cg", "lissa", "none")
_INT = (
    "size", "n_train_per_class", "n_test_per_class", "width", "epochs", "train_batch_size",
    "texture_steps", "style_steps", "top_k", "shap_background", "shap_images",
    "sweep_images", "seed", "num_threads",
)  # fmt: skip
_FLOAT = ("lr", "texture_strength", "style_weight", "damping")
_STR = ("data", "model", "style", "hessian", "global_hessian", "shap_explainer")
_OPTIONAL_STR = ("data_path", "weights")


def _bad(key: str, fix: str, value) -> ConfigError:
    return ConfigError(f"key {key!r}: {fix}; got {value!r}.", key)


def _check_types(cfg) -> None:
    for key in _INT:
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(key, "must be an integer", value)
    for key in _FLOAT:
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(key, "must be a number", value)
    for key in _STR:
        if not isinstance(getattr(cfg, key), str):
            raise _bad(key, "must be a string", getattr(cfg, key))
    for key in _OPTIONAL_STR:
        value = getattr(cfg, key)
        if value is not None and not isinstance(value, str):
            raise _bad(key, "must be a string (a path) or null", value)
    _check_lists(cfg)


def _check_lists(cfg) -> None:
    for key, kind in (("sweep_strengths", (int, float)), ("sweep_steps", (int,))):
        value = getattr(cfg, key)
        if (
            not isinstance(value, list | tuple)
            or not value
            or any(isinstance(x, bool) or not isinstance(x, kind) for x in value)
        ):
            what = "numbers" if kind != (int,) else "integers"
            raise _bad(key, f"must be a non-empty list of {what}", value)


def _check_values(cfg) -> None:
    _check_sources(cfg)
    _check_ranges(cfg)
    _check_names(cfg)


def _check_sources(cfg) -> None:
    """Data and model: known kinds, with the paths they need."""
    if cfg.data not in ("shapes", "imagefolder", "cifar10"):
        raise _bad("data", "must be 'shapes', 'imagefolder' or 'cifar10'", cfg.data)
    if cfg.data != "shapes" and not cfg.data_path:
        raise _bad("data_path", f"data={cfg.data!r} needs data_path, the folder of your data", None)
    if cfg.model != "shapes_cnn" and not cfg.weights:
        raise _bad(
            "weights",
            f"model={cfg.model!r} needs weights, a local state-dict path (nothing is downloaded)",
            None,
        )


_AT_LEAST_1 = (
    "size", "n_train_per_class", "n_test_per_class", "width", "epochs", "train_batch_size",
    "top_k", "shap_background", "shap_images", "sweep_images", "num_threads",
)  # fmt: skip


def _check_ranges(cfg) -> None:
    """Counts, rates and fractions within their ranges."""
    for key in _AT_LEAST_1:
        if getattr(cfg, key) < 1:
            raise _bad(key, "must be at least 1", getattr(cfg, key))
    for key in ("texture_steps", "style_steps", "seed"):
        if getattr(cfg, key) < 0:
            raise _bad(key, "must be at least 0", getattr(cfg, key))
    for key in ("lr", "style_weight"):
        if not getattr(cfg, key) > 0:
            raise _bad(key, "must be a positive number", getattr(cfg, key))
    _check_fractions(cfg)


def _check_fractions(cfg) -> None:
    """Damping, texture strengths and sweep steps within their ranges."""
    if not cfg.damping >= 0:
        raise _bad("damping", "must be at least 0", cfg.damping)
    if not 0 <= cfg.texture_strength <= 1:
        raise _bad(
            "texture_strength", "must lie in [0, 1] (the share of texture)", cfg.texture_strength
        )
    if any(not 0 <= s <= 1 for s in cfg.sweep_strengths):
        raise _bad("sweep_strengths", "every strength must lie in [0, 1]", cfg.sweep_strengths)
    if any(k < 0 for k in cfg.sweep_steps):
        raise _bad("sweep_steps", "every step count must be at least 0", cfg.sweep_steps)


def _check_names(cfg) -> None:
    """Strategies, explainers and factories named as the package knows them."""
    from ..influence.strategies import available_strategies
    from ..shapley._backends import BACKENDS

    if cfg.hessian not in available_strategies():
        raise _bad("hessian", f"must be one of {available_strategies()}", cfg.hessian)
    if cfg.global_hessian not in GLOBAL_HESSIANS:
        raise _bad(
            "global_hessian",
            f"must be one of {list(GLOBAL_HESSIANS)} (a block-diagonal strategy such as "
            "'ekfac' would only repeat the compound score)",
            cfg.global_hessian,
        )
    if cfg.shap_explainer not in BACKENDS:
        raise _bad("shap_explainer", f"must be one of {list(BACKENDS)}", cfg.shap_explainer)
    if cfg.model != "shapes_cnn" and ":" in cfg.model:
        module, _, function = cfg.model.partition(":")
        if not module or not function:
            raise _bad("model", "a factory must be written 'package.module:function'", cfg.model)


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
        model: "shapes_cnn" (trained here), a torchvision model name ("resnet18", ...), or
            your own `nn.Module` as an importable factory "package.module:function"
            called as `function(num_classes=n_classes)`; the last two are loaded from
            `weights` and not trained.
        weights: Local state-dict path for the model (never downloaded); with "shapes_cnn"
            it replaces training. Its content is hashed: new weights at the same path
            recompute the stages that depend on the model.
        width: Channels of the first convolutions of "shapes_cnn" (doubled twice further on).
        epochs: Training epochs of "shapes_cnn".
        lr: Adam learning rate.
        train_batch_size: Mini-batch size of training.
        texture_steps: L-BFGS steps of the texture transfer onto the white-background images.
        texture_strength: Share s of texture in the transfer loss `(1 - s) content + s Gram`
            of the textured variant (our definition of the paper's "percentage of
            texture"); 0.5 keeps the object's shape recognisable on the embedded data
            (1.0 is pure texture synthesis inside the silhouette).
        style_steps: L-BFGS steps of the style transfer.
        style: Offline style image name (see `transforms.available_images()`) or a path.
        style_weight: Weight of the Gram (style) loss against the content loss.
        hessian: Curvature strategy of the layer-wise influence ("exact", "ekfac", "cg", ...).
        global_hessian: Curvature of the global (all-parameter) influence, the paper's
            Eq. 5: "gauss-newton" (the dense Gauss-Newton matrix Jᵀ Λ J of all parameters,
            factorised once: the cross-layer second-order terms left out; feasible to
            ~15 k parameters), "hessian" (the dense true Hessian from Hessian-vector
            products: Eq. 5 exactly, one product per parameter), "cg" or "lissa" (the
            true Hessian, iteratively), or "none" (no global stage). A block-diagonal
            strategy is refused: its global score is the compound score again.
        damping: λ of `(H + λ I)⁻¹`.
        top_k: Influential training images kept per test image.
        shap_explainer: "gradient", "deep" or "partition".
        shap_background: Training images used as SHAP background.
        shap_images: Test images (of the original variant) shown with SHAP maps.
        sweep_strengths: Texture fractions of the texture sweep (Fig. 6).
        sweep_steps: Transfer iterations of the texture sweep.
        sweep_images: Test images swept.
        seed: Seed of data, initialisation, transforms and SHAP.
        num_threads: CPU threads while the study runs (restored after). Fixed so that
            floating-point sums, and so training and every finding, are the same on
            machines with other core counts.
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
    texture_strength: float = 0.5
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
    num_threads: int = 1
    show_progress: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_values(self)
        object.__setattr__(self, "sweep_strengths", tuple(self.sweep_strengths))
        object.__setattr__(self, "sweep_steps", tuple(self.sweep_steps))

    def to_dict(self) -> dict:
        """The configuration as a JSON-ready dict."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Writes the configuration as JSON (atomically: a crash leaves the old file)."""
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        """Reads a configuration written by `save` (or by hand).

        Raises:
            ConfigError: The file is missing, not a JSON object, has an unknown key or a
                value of the wrong type or range; the message names the file and key.
        """
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file; write one with `captum-layerinf config`.")
        text = path.read_text()
        if not text.strip():
            raise ConfigError(
                f"{path}: the file is empty; write one with `captum-layerinf config > {path}`."
            )
        try:
            values = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: not valid JSON ({err}); fix the syntax.") from None
        if not isinstance(values, dict):
            raise ConfigError(
                f'{path}: must hold a JSON object {{"key": value, ...}}, not a '
                f"{type(values).__name__}; see `captum-layerinf config` for the keys."
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{path}: unknown key {unknown[0]!r}; valid keys: {sorted(known)}.",
                unknown[0],
            )
        try:
            return cls(**values)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}", err.key) from None

    def same_run(self, other: StudyConfig) -> bool:
        """Whether `other` computes the same results (progress bars do not count)."""
        return self == other


def tiny_config(**changes) -> StudyConfig:
    """A configuration small enough for a test: the whole study in well under a minute."""
    values: dict[str, Any] = dict(
        size=16,
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
        num_threads=1,
        show_progress=False,
    )
    values.update(changes)
    return StudyConfig(**values)
