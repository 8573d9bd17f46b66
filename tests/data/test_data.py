"""Datasets, splits and the tensor loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.config.schema import DataConfig
from kdlab.data import TensorLoader, build_data
from kdlab.data.images import FASHION_MNIST_DIR, read_idx
from kdlab.data.splits import stratified_split
from kdlab.errors import DataError


def _ids(split) -> set[bytes]:
    return {row.numpy().tobytes() for row in split.x}


def test_digits_splits_disjoint_stratified_and_seeded() -> None:
    a = build_data(DataConfig(name="digits"), seed=0)
    b = build_data(DataConfig(name="digits"), seed=0)
    c = build_data(DataConfig(name="digits"), seed=1)
    assert (len(a.train), len(a.val), len(a.test)) == (1437, 180, 180)
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    # disjoint by index: check via the split function directly, and no test row appears in train
    tr, va, te = stratified_split(np.repeat(np.arange(10), 20), (0.8, 0.1, 0.1), seed=0)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert len(set(tr) | set(va) | set(te)) == 200
    # stratified: each class keeps its share in the test split (18 per class of 180, +-1)
    counts = np.bincount(a.test.y.numpy(), minlength=10)
    assert counts.min() >= 16 and counts.max() <= 20
    assert a.classes == [str(i) for i in range(10)] and a.input_shape == (1, 8, 8)


def test_split_needs_enough_samples_per_class() -> None:
    with pytest.raises(DataError, match="cannot split"):
        stratified_split(np.array([0] * 20 + [1]), (0.8, 0.1, 0.1), seed=0)
    with pytest.raises(DataError, match="at least 2 classes"):
        stratified_split(np.zeros(20, dtype=int), (0.8, 0.1, 0.1), seed=0)


def test_train_limit_takes_stratified_subset() -> None:
    d = build_data(DataConfig(name="digits", train_limit=200), seed=0)
    assert len(d.train) == 200 and len(d.test) == 180
    assert np.bincount(d.train.y.numpy()).min() >= 18


def test_tensor_loader_covers_every_sample_once_in_seeded_order() -> None:
    x = torch.arange(100).float().unsqueeze(1)
    y = torch.arange(100)
    loader = TensorLoader(x, y, batch_size=32, shuffle=True, seed=5)
    epoch0 = torch.cat([b.index for b in loader])
    epoch1 = torch.cat([b.index for b in loader])
    assert sorted(epoch0.tolist()) == list(range(100))
    assert not torch.equal(epoch0, epoch1)
    again = TensorLoader(x, y, batch_size=32, shuffle=True, seed=5)
    assert torch.equal(torch.cat([b.index for b in again]), epoch0)
    for b in TensorLoader(x, y, batch_size=32, shuffle=True, seed=5):
        assert torch.equal(b.x.squeeze(1).long(), b.index) and torch.equal(b.y, b.index)
    assert len(loader) == 4


def test_uint8_pixels_scaled_to_unit_interval() -> None:
    x = torch.tensor([[0, 255, 51]], dtype=torch.uint8)
    batch = next(iter(TensorLoader(x, torch.tensor([1]))))
    assert batch.x.dtype == torch.float32
    assert batch.x[0].tolist() == pytest.approx([0.0, 1.0, 0.2])


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_real_files() -> None:
    d = build_data(DataConfig(name="fashion-mnist"), seed=0)
    assert (len(d.train), len(d.val), len(d.test)) == (54000, 6000, 10000)
    assert d.train.x.dtype == torch.uint8 and d.input_shape == (1, 28, 28)
    assert d.classes[9] == "Ankle boot"


def test_fashion_mnist_missing_folder_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_data(DataConfig(name="fashion-mnist", path=tmp_path), seed=0)


def test_idx_reader_rejects_truncated_file(tmp_path: Path) -> None:
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 10]) + bytes(5))
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    assert read_idx(p).tolist() == [7, 8, 9]


def _write_digit_pngs(root: Path, per_class: int = 12) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for cls in (0, 1, 2):
        folder = root / f"class{cls}"
        folder.mkdir(parents=True)
        idx = np.flatnonzero(d.target == cls)[:per_class]
        for k, i in enumerate(idx):
            img = (d.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(img, mode="L").save(folder / f"{k}.png")


def test_image_folder_decodes_skips_corrupt_and_caches(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _write_digit_pngs(root)
    (root / "class1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    cfg = DataConfig(name="image-folder", path=root, image_size=16, cache_dir=tmp_path / "cache")
    d = build_data(cfg, seed=0)
    assert d.input_shape == (3, 16, 16) and d.classes == ["class0", "class1", "class2"]
    assert len(d.train) + len(d.val) + len(d.test) == 36
    assert d.meta["skipped_files"] == [str(root / "class1" / "broken.jpg")]
    assert d.train.x.dtype == torch.uint8
    # grayscale PNGs were converted to RGB: the three channels are equal
    assert torch.equal(d.train.x[:, 0], d.train.x[:, 1])
    cached = list((tmp_path / "cache").glob("images-*.npy"))
    assert len(cached) == 1
    again = build_data(cfg, seed=0)
    assert torch.equal(again.train.x, d.train.x)
    # a new file changes the cache key
    (root / "class2" / "extra.png").write_bytes((root / "class2" / "0.png").read_bytes())
    assert len(build_data(cfg, seed=0).train) + 1 >= len(d.train) + 1
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 2


def test_image_folder_bad_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        build_data(DataConfig(name="image-folder", path=tmp_path / "nope"), seed=0)
    (tmp_path / "only").mkdir()
    with pytest.raises(DataError, match="class folder"):
        build_data(DataConfig(name="image-folder", path=tmp_path), seed=0)
