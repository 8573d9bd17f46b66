"""Image folders larger than ``data.max_memory_gb``: the decoded cache is memory-mapped and the splits
hold row indices into it. A lab run on the map gives the same weights and accuracies as the same run
in memory; the parallel decode writes exactly the rows and the skipped list of the one-process decode;
a corrupt, an empty and a non-image file are skipped and listed on both paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmap_runs import TINY_GB, memory_and_mapped_runs
from view_fixtures import write_images

from kdlab.config.schema import DataConfig
from kdlab.data import build_data, images
from kdlab.data.mapped import MappedRows, concat
from kdlab.data.tensors import Split, TensorLoader


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 small PNG / JPEG files in two classes, plus a corrupt JPEG, an empty file and a text file."""
    root = write_images(tmp_path_factory.mktemp("mmap") / "imgs", n_per_class=20, size=20)
    (root / "a" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not really a jpeg")
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


BAD = ("a/bad.jpg", "b/empty.png", "b/notes.txt")


def files_of(root: Path) -> list[tuple[Path, int]]:
    return images._list_files(root, ["a", "b"])


def test_parallel_decode_equals_the_one_process_decode(folder: Path, tmp_path: Path) -> None:
    files = files_of(folder)
    x_ref, y_ref, skipped_ref = images._decode_all(files, 12, folder)
    assert sorted(skipped_ref) == sorted(str(folder / b) for b in BAD) and len(y_ref) == 40
    for workers, chunk in ((2, 7), (1, 64)):  # several chunks in two processes; one chunk in this one
        out = tmp_path / f"w{workers}.npy"
        y, skipped = images.decode_to_file(files, 12, out, workers=workers, chunk=chunk)
        assert skipped == skipped_ref and np.array_equal(y, y_ref)
        decoded = np.load(out)
        assert decoded.shape == (40, 3, 12, 12) and np.array_equal(decoded, x_ref)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_a_folder_over_the_budget_is_mapped_and_reads_the_same_rows(folder: Path, tmp_path: Path) -> None:
    base = {"name": "image-folder", "path": folder, "image_size": 12}
    mem = build_data(DataConfig(**base, cache_dir=tmp_path / "c1"), seed=0)
    mapped = build_data(DataConfig(**base, cache_dir=tmp_path / "c2", max_memory_gb=TINY_GB), seed=0)
    for name in ("train", "val", "test"):
        a, b = getattr(mem, name), getattr(mapped, name)
        assert isinstance(a.x, torch.Tensor) and isinstance(b.x, MappedRows)
        assert isinstance(b.x.state.map, np.memmap)  # rows of the mapped cache file, not a copy
        assert b.x.shape == a.x.shape and b.x.dtype == torch.uint8 and torch.equal(a.y, b.y)
        assert torch.equal(b.x[torch.arange(len(b.x)).flip(0)], a.x.flip(0))  # an unsorted gather keeps its order
        assert torch.equal(b.x[1:5], a.x[1:5]) and torch.equal(b.x[-1], a.x[-1])
    assert mapped.train.x.state is mapped.test.x.state  # one map shared by the three splits
    assert mem.meta["skipped_files"] == mapped.meta["skipped_files"]
    assert sorted(mapped.meta["skipped_files"]) == sorted(str(folder / b) for b in BAD)
    # A split of a split composes the indices; a loader's batches are the in-memory loader's.
    idx = torch.tensor([5, 0, 3])
    assert torch.equal(mapped.train.take(idx).x[:], mem.train.take(idx).x)
    la = TensorLoader(mem.train.x, mem.train.y, batch_size=8, shuffle=True, seed=3)
    lb = TensorLoader(mapped.train.x, mapped.train.y, batch_size=8, shuffle=True, seed=3)
    for ba, bb in zip(la, lb, strict=True):
        assert torch.equal(ba.x, bb.x) and torch.equal(ba.index, bb.index)
    # Joined with in-memory rows (an image-folder transfer set) the rows stay mapped, in order.
    extra = torch.randint(0, 255, (3, 3, 12, 12), dtype=torch.uint8)
    joined = concat(mapped.train.x, extra)
    assert isinstance(joined, MappedRows) and torch.equal(joined[:], torch.cat([mem.train.x, extra]))
    # A second load reads the cache: still mapped, same rows.
    again = build_data(DataConfig(**base, cache_dir=tmp_path / "c2", max_memory_gb=TINY_GB), seed=0)
    assert torch.equal(again.train.x[:], mem.train.x)


@pytest.mark.e2e  # two whole lab runs
def test_a_lab_run_on_the_map_gives_the_in_memory_weights_and_accuracies(folder: Path, tmp_path: Path) -> None:
    sets = ["data.name=image-folder", f"data.path={folder}", "data.image_size=12"]
    results = memory_and_mapped_runs(tmp_path, sets)
    mem, mapped = results["memory"], results["mapped"]
    assert mem["performance"]["train_data"] == "device"
    assert mapped["performance"]["train_data"] == "memory-mapped (gathered per batch)"
    assert mapped["teacher_cache"]["status"] == "miss"  # the mapped run built its own cache, from the map
    assert mem["teacher_cache"]["fingerprint"] == mapped["teacher_cache"]["fingerprint"]
    assert sorted(mapped["data"]["skipped_files"]) == sorted(str(folder / b) for b in BAD)


def test_a_split_on_the_map_moves_to_the_cpu_lazily(folder: Path, tmp_path: Path) -> None:
    data = build_data(
        DataConfig(name="image-folder", path=folder, image_size=12, cache_dir=tmp_path, max_memory_gb=TINY_GB), 0
    )
    moved = data.train.to("cpu")
    assert moved.x is data.train.x  # still mapped, nothing read
    assert moved.x.numel() * moved.x.element_size() == len(data.train) * 3 * 12 * 12
    copy = data.train.x.to("cpu", torch.float32)
    assert isinstance(copy, torch.Tensor) and torch.equal(copy, data.train.x[:].float())
    assert isinstance(Split(data.train.x, data.train.y).take(torch.tensor([1])).x, MappedRows)


def test_an_unwritable_cache_folder_still_decodes_mapped_or_in_memory(folder: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    base = {"name": "image-folder", "path": folder, "image_size": 12, "cache_dir": blocked / "cache"}
    ref = build_data(DataConfig(name="image-folder", path=folder, image_size=12, cache_dir=tmp_path / "ok"), 0)
    mem = build_data(DataConfig(**base), 0)
    mapped = build_data(DataConfig(**base, max_memory_gb=TINY_GB), 0)
    assert isinstance(mem.train.x, torch.Tensor) and torch.equal(mem.train.x, ref.train.x)
    assert isinstance(mapped.train.x, MappedRows) and mapped.train.x.path is not None
    assert not mapped.train.x.path.exists()  # the temporary file is gone; its mapping still reads
    assert torch.equal(mapped.train.x[:], ref.train.x)
    assert mapped.meta["skipped_files"] == ref.meta["skipped_files"]
