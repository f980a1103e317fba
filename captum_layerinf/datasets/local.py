"""The user's own data from a local path: ImageFolder trees and CIFAR-10 (never downloaded)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
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
            v2.ToImage(),
            v2.RGB(),
            v2.Resize(size, antialias=True),
            v2.CenterCrop(size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    folder = datasets.ImageFolder(str(root), transform=transform)
    labels = torch.tensor(folder.targets)
    keep = _cap(labels, per_class)
    images = torch.stack([folder[int(i)][0] for i in keep])
    return images, labels[keep], list(folder.classes)


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
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch[b"labels"])
    images = torch.from_numpy(np.concatenate(data)).float() / 255
    labels = torch.tensor(labels)
    keep = _cap(labels, per_class)
    return images[keep], labels[keep], list(CIFAR10_CLASSES)
