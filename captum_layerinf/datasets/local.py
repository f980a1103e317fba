"""The user's own data from a local path: ImageFolder trees and CIFAR-10 (never downloaded)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import datasets
from torchvision.transforms import v2

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _cap(labels: Tensor, per_class: int | None) -> Tensor:
    """Indices of the first `per_class` examples of every class, in order."""
    if per_class is None:
        return torch.arange(len(labels))
    keep = [torch.nonzero(labels == c)[:per_class, 0] for c in labels.unique()]
    return torch.cat(keep).sort().values


def load_image_folder(
    root: str | Path, size: int = 32, per_class: int | None = None
) -> tuple[Tensor, Tensor, list[str]]:
    """Images of a torchvision `ImageFolder` tree (`root/<class>/<image>`), resized.

    Args:
        root: The folder; its subfolders are the classes, in sorted order.
        size: Images are resized (shorter side) and centre-cropped to `size` x `size`.
        per_class: Keep at most this many images per class (the first ones, sorted by path).

    Returns:
        `(images [n, 3, size, size] float in [0, 1], labels [n], class_names)`.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root} is not a folder. Give an ImageFolder tree: {root}/<class name>/<images>."
        )
    transform = v2.Compose(
        [
            v2.RGB(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    folder = datasets.ImageFolder(str(root), transform=transform, loader=read_image)
    labels = torch.tensor(folder.targets)
    keep = _cap(labels, per_class)
    images = torch.stack([folder[int(i)][0] for i in keep])
    return images, labels[keep], list(folder.classes)


# PIL modes of more than 8 bits per channel, and their full scale (None: float values).
_WIDE_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": None}


def read_image(path: str | Path) -> Tensor:
    """One image file as `Tensor [C, H, W]`: uint8 for 8-bit images, float in [0, 1] else.

    16-bit images are scaled by 1/65535 and float images (e.g. TIFF) kept as they are;
    PIL's own conversion to RGB would clip both to 8 bits (30000/65535 became 1.0, and 0.5
    became 0.0).

    Raises:
        ValueError: The file cannot be decoded (truncated, not an image), or a float image
            holds values outside [0, 1], naming the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode not in _WIDE_MODES:
                return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
            array = np.array(image).astype(np.float64)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(
            f"cannot decode the image {path} ({type(e).__name__}: {e}). Replace or remove the "
            "file (it may be truncated or not an image)."
        ) from e
    scale = _WIDE_MODES[mode]
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0 or high > (scale or 1.0):
        raise ValueError(
            f"the image {path} (PIL mode {mode!r}) holds values in [{low:g}, {high:g}], outside "
            f"[0, {scale or 1}]; rescale it to that range (or save it as 8-bit or 16-bit PNG)."
        )
    return torch.from_numpy(array / (scale or 1.0)).float().unsqueeze(0)


def load_cifar10(
    root: str | Path, train: bool = True, per_class: int | None = None
) -> tuple[Tensor, Tensor, list[str]]:
    """CIFAR-10 from its extracted python batches (`root/cifar-10-batches-py/`).

    The files are read directly (pickle dicts with `data` and `labels`), so nothing is
    downloaded and no checksum of the original archive is needed.

    Args:
        root: The folder holding `cifar-10-batches-py`, or that folder itself.
        train: The five training batches, or the test batch.
        per_class: Keep at most this many images per class.

    Returns:
        `(images [n, 3, 32, 32] float in [0, 1], labels [n], class_names)`.
    """
    root = Path(root)
    folder = root if root.name == "cifar-10-batches-py" else root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batches {missing} not found in {folder}. Extract cifar-10-python.tar.gz "
            "there (nothing is downloaded at run time)."
        )
    data, labels = [], []
    for name in names:
        batch = _read_cifar_batch(folder / name)
        data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[b"labels"])
    images = torch.from_numpy(np.concatenate(data)).float() / 255
    targets = torch.tensor(labels)
    keep = _cap(targets, per_class)
    return images[keep], targets[keep], list(CIFAR10_CLASSES)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays; any other class or function is refused.

    A pickle names the callables it runs; a crafted batch file could name `os.system`.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"it asks to run {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> dict:
    """A CIFAR-10 python batch (`{b"data": uint8 [n, 3072], b"labels": [n]}`), read safely."""
    fix = "Replace it with the file from the original cifar-10-python.tar.gz."
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a CIFAR-10 batch that can be read without running code ({e}); "
            f"nothing in it was executed. {fix}"
        ) from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"{path} is not a CIFAR-10 batch (no data and labels). {fix}")
    return batch
