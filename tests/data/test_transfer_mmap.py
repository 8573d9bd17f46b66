"""Image-folder transfer sets (data.unlabeled: <folder>) on the image folder's decode cache: the same rows,
skipped files and held-out drops with the default budget (a tensor) and over data.max_memory_gb (mapped
rows of the cache file); a second build reads the cache; a lab run on the map gives the in-memory weights;
grey or float data (digits) keep the in-memory decode."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmap_runs import TINY_GB, memory_and_mapped_runs
from view_fixtures import write_images

from kdlab.config.schema import DataConfig
from kdlab.data import build_data, images
from kdlab.data.bundle import DataBundle
from kdlab.data.decode import decode_image
from kdlab.data.mapped import MappedRows
from kdlab.kd.losses import UNLABELED

SIZE = 12


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("data") / "imgs", n_per_class=12, size=20)


@pytest.fixture(scope="module")
def loose(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A transfer folder of any layout: 10 images in nested folders, two loose ones, a corrupt JPEG,
    a text file and a dot-file (not listed)."""
    root = tmp_path_factory.mktemp("loose") / "pool"
    write_images(root / "x", n_per_class=5, size=24)  # x/a/*.png|jpg, x/b/*.png|jpg: none equal to the data's
    shutil.copy(root / "x" / "a" / "01.png", root / "top.png")
    (root / "x" / "a" / "01.png").unlink()  # moved up a level
    shutil.copy(root / "x" / "b" / "02.jpg", root / "x" / "deeper.jpg")
    (root / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not really a jpeg")
    (root / "x" / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes((root / "top.png").read_bytes())
    return root


BAD = ("bad.jpg", "x/notes.txt")


def build(data_dir: Path, pool: Path, cache: Path, budget: float | None = None, **more: object) -> DataBundle:
    cfg = DataConfig(
        name="image-folder",
        path=data_dir,
        image_size=SIZE,
        cache_dir=cache,
        unlabeled=pool,
        **({} if budget is None else {"max_memory_gb": budget}),
        **more,  # type: ignore[arg-type]
    )
    return build_data(cfg, seed=0)


def reference_rows(pool: Path) -> tuple[torch.Tensor, list[str]]:
    """Every file of ``pool`` decoded one by one (sorted, dot-files left out), and those that did not decode."""
    rows, skipped = [], []
    for p in sorted(q for q in pool.rglob("*") if not q.name.startswith(".") and not q.is_dir()):
        try:
            rows.append(decode_image(p, "RGB", (SIZE, SIZE)).transpose(2, 0, 1))
        except Exception:
            skipped.append(str(p))
    return torch.from_numpy(np.stack(rows)), skipped


def test_a_transfer_folder_over_the_budget_is_mapped_and_holds_the_same_rows(
    data_dir: Path, loose: Path, tmp_path: Path
) -> None:
    mem = build(data_dir, loose, tmp_path / "c1")
    mapped = build(data_dir, loose, tmp_path / "c2", TINY_GB)
    a, b = mem.unlabeled, mapped.unlabeled
    assert a is not None and b is not None
    assert isinstance(a.x, torch.Tensor) and isinstance(b.x, MappedRows)
    assert isinstance(b.x.state.map, np.memmap) and b.x.path is not None and b.x.path.parent == tmp_path / "c2"
    ref, ref_skipped = reference_rows(loose)
    assert a.x.shape == b.x.shape == ref.shape == (11, 3, SIZE, SIZE) and b.x.dtype == torch.uint8
    assert torch.equal(a.x, ref) and torch.equal(b.x[:], ref)
    assert torch.all(a.y == UNLABELED) and torch.equal(a.y, b.y)
    assert mem.meta["unlabeled_skipped"] == mapped.meta["unlabeled_skipped"] == ref_skipped
    assert sorted(ref_skipped) == sorted(str(loose / f) for f in BAD)
    assert mem.meta["unlabeled_dropped_heldout"] == mapped.meta["unlabeled_dropped_heldout"] == 0
    assert mem.meta["skipped_files"] == mapped.meta["skipped_files"] and set(ref_skipped) <= set(
        mapped.meta["skipped_files"]
    )
    assert mem.summary()["unlabeled"] == mapped.summary()["unlabeled"]
    assert mapped.summary()["unlabeled"]["samples"] == 11


def test_unlabeled_limit_keeps_the_same_subset_on_the_map(data_dir: Path, loose: Path, tmp_path: Path) -> None:
    mem = build(data_dir, loose, tmp_path / "c1", unlabeled_limit=4)
    mapped = build(data_dir, loose, tmp_path / "c2", TINY_GB, unlabeled_limit=4)
    assert mem.unlabeled is not None and mapped.unlabeled is not None
    assert isinstance(mapped.unlabeled.x, MappedRows) and len(mapped.unlabeled) == 4
    assert torch.equal(mem.unlabeled.x, mapped.unlabeled.x[:])


@pytest.mark.parametrize("budget", [None, TINY_GB])
def test_a_second_build_reads_the_decode_cache(
    data_dir: Path, loose: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: float | None
) -> None:
    decoded: list[list[Path]] = []
    original = images.decode_to_file

    def counting(files: list[tuple[Path, int]], *args: object, **kwargs: object) -> object:
        decoded.append([p for p, _ in files])
        return original(files, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(images, "decode_to_file", counting)
    first = build(data_dir, loose, tmp_path, budget)
    assert [d for d in decoded if d[0].is_relative_to(loose)] != []  # the transfer set went through the cache

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(images, "decode_to_file", no_decode)
    again = build(data_dir, loose, tmp_path, budget)
    assert first.unlabeled is not None and again.unlabeled is not None
    assert type(again.unlabeled.x) is type(first.unlabeled.x)
    assert torch.equal(again.unlabeled.x[:], first.unlabeled.x[:])
    assert again.meta["unlabeled_skipped"] == first.meta["unlabeled_skipped"]


@pytest.mark.parametrize("budget", [None, TINY_GB])
def test_a_copy_of_a_validation_image_is_dropped_on_both_paths(
    data_dir: Path, loose: Path, tmp_path: Path, budget: float | None
) -> None:
    plain = build(data_dir, loose, tmp_path / "c0", budget)
    val_files = plain.val.source
    held = Path(val_files.paths[int(val_files.rows[0])])  # type: ignore[union-attr]
    pool = tmp_path / "pool"
    shutil.copytree(loose, pool)
    shutil.copy(held, pool / f"leak{held.suffix}")
    data = build(data_dir, pool, tmp_path / "c1", budget)
    assert data.unlabeled is not None and plain.unlabeled is not None
    assert isinstance(data.unlabeled.x, MappedRows if budget else torch.Tensor)
    assert data.meta["unlabeled_dropped_heldout"] == 1 and len(data.unlabeled) == len(plain.unlabeled)
    held_row = plain.val.x[0:1].reshape(-1)
    assert not any(torch.equal(row.reshape(-1), held_row) for row in data.unlabeled.x[:])
    assert data.meta["unlabeled_skipped"] == [str(pool / f) for f in sorted(BAD)]


def test_float_data_keep_the_in_memory_decode(loose: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def not_cached(*args: object, **kwargs: object) -> None:
        raise AssertionError("digits (1×8×8 float) must not use the RGB decode cache")

    monkeypatch.setattr(images, "decode_listing", not_cached)
    data = build_data(DataConfig(name="digits", unlabeled=loose, max_memory_gb=TINY_GB), seed=0)
    assert data.unlabeled is not None and isinstance(data.unlabeled.x, torch.Tensor)
    assert data.unlabeled.x.shape == (11, 1, 8, 8) and data.unlabeled.x.dtype == torch.float32
    assert sorted(data.meta["unlabeled_skipped"]) == sorted(str(loose / f) for f in BAD)


@pytest.mark.e2e  # two whole lab runs
def test_a_lab_run_with_a_mapped_transfer_set_gives_the_in_memory_weights(
    data_dir: Path, loose: Path, tmp_path: Path
) -> None:
    sets = ["data.name=image-folder", f"data.path={data_dir}", f"data.image_size={SIZE}", f"data.unlabeled={loose}"]
    results = memory_and_mapped_runs(tmp_path, sets)
    mem, mapped = results["memory"], results["mapped"]
    assert mem["data"]["unlabeled"] == mapped["data"]["unlabeled"]
    assert mapped["data"]["unlabeled"]["samples"] == 11
    assert mapped["arms"]["distilled"]["train_samples"] == mapped["arms"]["scratch"]["train_samples"] + 11
