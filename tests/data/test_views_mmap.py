"""A model's own image view over ``data.max_memory_gb`` is built block by block into a temporary
memory-mapped file (unlinked once mapped) instead of one float32 tensor: the same values as the
in-memory view, for a view at another image size and one at the data's size with other mean/std;
the in-memory refusal still fires only in memory; a disk without the space is one line; a lab run
with its teacher on its own view gives the same weights and accuracies mapped as in memory."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from mmap_runs import TINY_GB, memory_and_mapped_runs
from view_fixtures import write_images

from kdlab.config.schema import DataConfig, InputConfig
from kdlab.data import build_data, memory, views
from kdlab.data.bundle import DataBundle
from kdlab.data.mapped import MappedRows, write_rows
from kdlab.errors import DataError

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("views-mmap") / "imgs", n_per_class=20, size=20)


def data_of(folder: Path, cache: Path, budget: float = 4.0) -> DataBundle:
    return build_data(
        DataConfig(name="image-folder", path=folder, image_size=12, cache_dir=cache, max_memory_gb=budget), 0
    )


def view_of(data: DataBundle, **fields: Any) -> views.View:
    view = views.resolve_view(InputConfig(**fields), None, data)
    assert view is not None
    return view


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The folders the mapped views were written in; the temporary folder is ``tmp_path / 'tmp'``."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    folders: list[Path] = []

    def spy(shape: Any, dtype: torch.dtype, blocks: Any, where: Path) -> MappedRows:
        folders.append(where)
        return write_rows(shape, dtype, blocks, where)

    monkeypatch.setattr(views, "write_rows", spy)
    return folders


def leftovers(*folders: Path) -> list[str]:
    return [p.name for f in folders for p in f.iterdir() if p.name.startswith(".kdlab-")]


@pytest.mark.parametrize(
    "fields", [{"image_size": 16, **IMAGENET}, {"image_size": 12, **IMAGENET}, {"channels": 1, "mean": [0.5]}]
)
@pytest.mark.parametrize("data_budget", [4.0, TINY_GB])  # the data in memory / the data mapped too
def test_a_mapped_view_equals_the_in_memory_view(
    folder: Path, tmp_path: Path, written: list[Path], fields: dict[str, Any], data_budget: float
) -> None:
    data = data_of(folder, tmp_path / "cache", data_budget)
    view = view_of(data, **fields)
    mem = views.view_bundle(view, data)
    assert written == []  # no budget: every split a tensor, as before
    mapped = views.view_bundle(view, data, max_memory_gb=TINY_GB)
    for name in ("train", "val", "test"):
        a, b = getattr(mem, name), getattr(mapped, name)
        assert isinstance(a.x, torch.Tensor) and isinstance(b.x, MappedRows), name
        assert b.x.dtype == torch.float32 and b.x.shape == a.x.shape == (len(a), *view.input_shape())
        assert torch.equal(b.x[:], a.x), name
        assert torch.equal(a.y, b.y) and a.source is b.source
        idx = torch.tensor([3, 0, 2])
        assert torch.equal(b.x[idx], a.x[idx])
    assert mapped.input_shape == mem.input_shape == view.input_shape()
    assert written == [tmp_path / "cache"] * 3  # next to the data's decode cache
    assert leftovers(tmp_path / "cache", tmp_path / "tmp") == []  # unlinked once mapped
    # Under the budget nothing changes: the same tensors as without one.
    roomy = views.view_bundle(view, data, max_memory_gb=4.0)
    assert all(torch.equal(getattr(roomy, k).x, getattr(mem, k).x) for k in ("train", "val", "test"))
    assert len(written) == 3


def test_a_split_over_the_budget_goes_to_the_map_and_one_under_it_stays_a_tensor(
    folder: Path, tmp_path: Path, written: list[Path]
) -> None:
    data = data_of(folder, tmp_path / "cache")
    view = view_of(data, image_size=16, **IMAGENET)
    per_row_gb = 4 * 3 * 16 * 16 / memory.GB
    rows = torch.arange(4)
    small = views.build_view(view, data, "train", rows, max_memory_gb=5 * per_row_gb)
    big = views.build_view(view, data, "train", rows, max_memory_gb=3 * per_row_gb)
    assert isinstance(small, torch.Tensor) and isinstance(big, MappedRows) and torch.equal(big[:], small)
    assert isinstance(views.build_view(view, data, "train", rows[:0], max_memory_gb=0.0), torch.Tensor)  # empty


def test_the_memory_refusal_fires_in_memory_only(folder: Path, tmp_path: Path, monkeypatch, written) -> None:
    data = data_of(folder, tmp_path / "cache", TINY_GB)
    view = view_of(data, image_size=12, **IMAGENET)
    monkeypatch.setattr(memory, "available_bytes", lambda: 1000)
    with pytest.raises(DataError, match=r"^input\.image_size: .* need .* of memory") as e:
        views.view_bundle(view, data)
    assert "\n" not in str(e.value)
    mapped = views.view_bundle(view, data, max_memory_gb=TINY_GB)  # the case this bound is for
    assert isinstance(mapped.train.x, MappedRows)


def test_a_disk_without_the_space_is_refused_in_one_line(folder: Path, tmp_path: Path, monkeypatch, written) -> None:
    data = data_of(folder, tmp_path / "cache")
    view = view_of(data, image_size=12, **IMAGENET)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: type("U", (), {"free": 100})())
    with pytest.raises(DataError, match=r"^input\.image_size: .* as float32 need .* on disk in ") as e:
        views.view_bundle(view, data, max_memory_gb=TINY_GB)
    assert "\n" not in str(e.value) and "data.max_memory_gb" in str(e.value)
    assert written == [] and leftovers(tmp_path / "cache", tmp_path / "tmp") == []


def test_an_unwritable_cache_folder_puts_the_view_in_the_temporary_folder(
    folder: Path, tmp_path: Path, monkeypatch, written
) -> None:
    data = data_of(folder, tmp_path / "cache", TINY_GB)
    view = view_of(data, image_size=12, **IMAGENET)
    real = views.os.access
    monkeypatch.setattr(views.os, "access", lambda p, mode: False if Path(p) == tmp_path / "cache" else real(p, mode))
    mapped = views.view_bundle(view, data, max_memory_gb=TINY_GB)
    assert written == [tmp_path / "tmp"] * 3 and leftovers(tmp_path / "tmp") == []
    assert torch.equal(mapped.test.x[:], views.view_bundle(view, data).test.x)


def test_write_rows_maps_the_blocks_and_refuses_a_wrong_count(tmp_path: Path) -> None:
    x = torch.randn(10, 2, 3)
    got = write_rows(x.shape, torch.float32, (x[i : i + 4] for i in range(0, 10, 4)), tmp_path)
    assert isinstance(got, MappedRows) and isinstance(got.state.map, np.memmap) and torch.equal(got[:], x)
    with pytest.raises(ValueError, match="rows written"):
        write_rows(x.shape, torch.float32, iter([x[:4]]), tmp_path)
    assert leftovers(tmp_path) == []


@pytest.mark.e2e  # two whole lab runs
def test_a_lab_run_with_a_teacher_on_its_own_mapped_view_gives_the_in_memory_results(
    folder: Path, tmp_path: Path, written: list[Path]
) -> None:
    sets = [
        "data.name=image-folder",
        f"data.path={folder}",
        "data.image_size=12",
        "teacher.input.image_size=16",
        f"teacher.input.mean={list(IMAGENET['mean'])}",
        f"teacher.input.std={list(IMAGENET['std'])}",
    ]

    def nothing_written() -> None:
        assert written == []  # under the budget the view is built in memory, as before

    results = memory_and_mapped_runs(tmp_path, sets, after_memory=nothing_written)
    mem, mapped = results["memory"], results["mapped"]
    # the teacher's view went to the map: the lab passes data.max_memory_gb to views.view_bundle
    assert written and set(written) == {tmp_path / "mapped" / "cache"}, "the teacher's view was not mapped"
    assert mapped["inputs"]["teacher"]["image_size"] == 16
    assert mem["teacher_cache"]["fingerprint"] == mapped["teacher_cache"]["fingerprint"]
    assert leftovers(tmp_path / "mapped" / "cache", tmp_path / "tmp") == []
