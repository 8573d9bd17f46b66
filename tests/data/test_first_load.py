"""The first load of an image folder, made cheaper without changing a pixel: ``decode_image`` skips
Pillow's same-mode / same-size copies, the cache file's blocks are reserved before the workers
write, and each split is read out of the mapped cache once (in threads) instead of the whole array
being read and the splits copied out of it."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.config.schema import DataConfig
from kdlab.data import build_data, images, mapped
from kdlab.data.decode import decode_image
from kdlab.data.mapped import MappedRows


def reference(path: Path, mode: str, size: tuple[int, int]) -> np.ndarray:
    """What decode_image gave before: Pillow's convert and resize, always called."""
    from PIL import Image

    with Image.open(path) as img:
        img.draft(mode, size)
        return np.asarray(img.convert(mode).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One file per case the shortcut must get right: already RGB at the size, RGB at another size,
    grey, grey JPEG, RGBA, palette with transparency, CMYK JPEG, 16-bit grey PNG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    cases = {
        "rgb16.png": Image.fromarray(rgb),
        "rgb16.jpg": Image.fromarray(rgb),
        "rgb23x17.png": Image.fromarray(rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)),
        "grey16.png": Image.fromarray(rgb[..., 0]),
        "grey16.jpg": Image.fromarray(rgb[..., 1]),
        "rgba16.png": Image.fromarray(rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)),
        "cmyk16.jpg": Image.fromarray(rgb).convert("CMYK"),
        "grey16bit.png": Image.fromarray(rng.integers(0, 65535, (16, 16), dtype=np.uint16)),
    }
    pal = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    cases["palette16.png"] = pal
    paths = []
    for name, img in cases.items():
        img.save(root / name)
        paths.append(root / name)
    return paths


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("size", [(16, 16), (12, 12), (20, 9)])
def test_decode_image_gives_the_pixels_of_convert_then_resize(
    odd_images: list[Path], mode: str, size: tuple[int, int]
) -> None:
    for path in odd_images:
        got = decode_image(path, mode, size)
        want = reference(path, mode, size)
        assert got.shape == want.shape and got.dtype == np.uint8, path.name
        assert np.array_equal(got, want), path.name


def test_a_truncated_file_still_raises_instead_of_giving_an_array(tmp_path: Path) -> None:
    from PIL import Image

    good = tmp_path / "ok.jpg"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(OSError):
        decode_image(cut, "RGB", (32, 32))


def test_the_cache_file_is_reserved_before_the_workers_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    real = os.posix_fallocate

    def spy(fd: int, offset: int, length: int) -> None:
        calls.append((offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", spy)
    from view_fixtures import write_images

    root = write_images(tmp_path / "imgs", n_per_class=5, size=10)
    files = images._list_files(root, ["a", "b"])
    out = tmp_path / "x.npy"
    images.decode_to_file(files, 8, out, workers=1)
    arr = np.load(out, mmap_mode="r")
    assert calls == [(0, int(arr.offset) + 10 * 3 * 8 * 8)]  # the header and every row, once
    assert arr.shape == (10, 3, 8, 8)


def test_a_full_disk_fails_before_decoding_and_an_unsupported_call_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from view_fixtures import write_images

    root = write_images(tmp_path / "imgs", n_per_class=4, size=10)
    files = images._list_files(root, ["a", "b"])
    decoded: list[str] = []
    real_rows = images._decode_rows
    monkeypatch.setattr(images, "_decode_rows", lambda names, size: decoded.extend(names) or real_rows(names, size))

    def refuse(code: int) -> Callable[[int, int, int], None]:
        def fallocate(fd: int, offset: int, length: int) -> None:
            raise OSError(code, os.strerror(code))

        return fallocate

    monkeypatch.setattr(os, "posix_fallocate", refuse(errno.ENOSPC))
    with pytest.raises(OSError) as err:
        images.decode_to_file(files, 8, tmp_path / "full.npy", workers=1)
    assert err.value.errno == errno.ENOSPC and decoded == []  # nothing decoded
    assert not (tmp_path / "full.npy").exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(os, "posix_fallocate", refuse(errno.EOPNOTSUPP))
    y, skipped = images.decode_to_file(files, 8, tmp_path / "sparse.npy", workers=1)
    assert len(y) == 8 and skipped == [] and np.load(tmp_path / "sparse.npy").shape == (8, 3, 8, 8)


def test_a_full_cache_disk_falls_back_to_the_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from view_fixtures import write_images

    root = write_images(tmp_path / "imgs", n_per_class=20, size=10)
    ref = build_data(DataConfig(name="image-folder", path=root, image_size=8, cache_dir=tmp_path / "ok"), 0)
    real = os.posix_fallocate
    cache = tmp_path / "full-cache"

    def full_there(fd: int, offset: int, length: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(cache)):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", full_there)
    got = build_data(DataConfig(name="image-folder", path=root, image_size=8, cache_dir=cache), 0)
    assert torch.equal(got.train.x, ref.train.x) and torch.equal(got.test.y, ref.test.y)
    assert [p.name for p in cache.iterdir() if p.suffix != ".json"] == []  # nothing half-written left there


def test_splits_are_read_out_of_the_map_without_loading_the_whole_array(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from view_fixtures import write_images

    root = write_images(tmp_path / "imgs", n_per_class=20, size=10)
    cfg = DataConfig(name="image-folder", path=root, image_size=8, cache_dir=tmp_path / "c")
    whole = images.decode_folder(root, ["a", "b"], 8, cfg)[0]  # the whole array, in memory
    assert isinstance(whole, torch.Tensor)
    loads: list[object] = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: loads.append(k.get("mmap_mode")) or real_load(*a, **k))
    data = build_data(cfg, 0)  # a cache hit
    assert loads and all(m == "r" for m in loads)  # only mapped, never read whole
    rows = torch.cat([data.train.source.rows, data.val.source.rows, data.test.source.rows])  # type: ignore[union-attr]
    assert sorted(rows.tolist()) == list(range(40))
    for part in (data.train, data.val, data.test):
        assert isinstance(part.x, torch.Tensor) and part.x.is_contiguous()
        assert torch.equal(part.x, whole[part.source.rows])  # type: ignore[union-attr]


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_materialise_in_blocks_and_threads_equals_the_gather(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "a.npy", arr)
    rows = MappedRows.open(tmp_path / "a.npy")
    monkeypatch.setattr(mapped, "CHUNK_BYTES", 5 * 48)  # 5 rows per block: 7 blocks for 33 rows
    monkeypatch.setattr("kdlab.data.memory.usable_cores", lambda: threads)
    released: list[int] = []
    monkeypatch.setattr(mapped, "RELEASE_BYTES", 10 * 48)  # pages dropped every 10 rows read
    real_release = rows.state.release
    monkeypatch.setattr(rows.state, "release", lambda: released.append(1) or real_release())
    pick = torch.tensor(sorted(np.random.default_rng(1).choice(50, 33, replace=False).tolist()))
    got = rows.take(pick).materialise()
    assert torch.equal(got, torch.from_numpy(arr[pick.numpy()]))
    assert len(released) == 3  # 33 rows read = 3 × 10 (+ 3 not yet released)
    unsorted = rows.take(pick.flip(0)).materialise()  # not ascending: the ordered gather
    assert torch.equal(unsorted, torch.from_numpy(arr[pick.flip(0).numpy()]))
    assert torch.equal(rows.take(pick)[:], got)  # the ascending gather of a batch agrees
