"""Loaders of the user's files decode every image faithfully and never run code from a file."""

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from captum_layerinf.datasets import load_cifar10, load_image_folder


def _tree(root, images):
    for name, image in images.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)


def test_16_bit_and_float_images_keep_their_values(tmp_path):
    _tree(
        tmp_path,
        {
            "a/deep.png": Image.fromarray(np.full((8, 8), 30000, np.uint16)),
            "b/float.tiff": Image.fromarray(np.full((8, 8), 0.5, np.float32)),
            "c/rgb.png": Image.fromarray(np.full((8, 8, 3), 200, np.uint8)),
        },
    )
    assert Image.open(tmp_path / "a/deep.png").mode == "I;16"
    assert Image.open(tmp_path / "b/float.tiff").mode == "F"
    x, y, _ = load_image_folder(tmp_path, size=8)
    expected = torch.tensor([30000 / 65535, 0.5, 200 / 255]).view(3, 1, 1, 1).expand(3, 3, 8, 8)
    assert torch.allclose(x, expected.float(), atol=1e-6)


def test_float_images_outside_the_unit_range_are_named(tmp_path):
    _tree(tmp_path, {"a/hdr.tiff": Image.fromarray(np.full((8, 8), 3.5, np.float32))})
    with pytest.raises(ValueError, match=r"hdr.tiff \(PIL mode 'F'\) holds values in \[3.5, 3.5\]"):
        load_image_folder(tmp_path, size=8)


def test_a_truncated_image_is_named(tmp_path):
    rng = np.random.default_rng(0)
    _tree(tmp_path, {"a/ok.png": Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8))})
    data = (tmp_path / "a/ok.png").read_bytes()
    (tmp_path / "a/cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cannot decode the image .*a/cut.png .*Replace"):
        load_image_folder(tmp_path, size=8)


def test_a_malicious_cifar_batch_is_refused_without_running_code(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}))
    with pytest.raises(ValueError, match=r"test_batch .*without running code \(it asks to run "):
        load_cifar10(tmp_path, train=False)
    assert not marker.exists()
    (folder / "test_batch").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="is not a CIFAR-10 batch that can be read"):
        load_cifar10(tmp_path, train=False)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_genuine_cifar_batches_still_load(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 255, (3, 3072), dtype=np.uint8)
    batch = {b"batch_label": b"testing batch 1 of 1", b"data": data, b"labels": [3, 1, 4]}
    buffer = io.BytesIO()
    pickle.dump(batch, buffer, protocol=protocol)
    (folder / "test_batch").write_bytes(buffer.getvalue())
    x, y, _ = load_cifar10(tmp_path, train=False)
    assert torch.equal(y, torch.tensor([3, 1, 4]))
    assert torch.equal((x * 255).round().to(torch.uint8).flatten(1), torch.from_numpy(data))
