"""Each model's own view of the samples (kdlab.data.views): the resolution rule (config, else the
model's declaration, else the data), the raw sources kept by the loaders (aligned with the rows
through the splits and data.train_limit), and the views built from them."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from view_fixtures import write_csv, write_images

from kdlab.config.schema import DataConfig, InputConfig
from kdlab.data import build_data
from kdlab.data.images import ImageFiles, decode_image
from kdlab.data.text import Texts
from kdlab.data.views import build_view, is_data_view, load_tokenizer, resolve, resolve_view, view_bundle
from kdlab.errors import ConfigError
from kdlab.models.common import Declared

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def digits() -> object:
    return build_data(DataConfig(name="digits"), 0)


# ------------------------------------------------------------------ the rule


def test_the_data_view_is_no_view(digits) -> None:
    assert resolve_view(InputConfig(), None, digits) is None
    assert resolve_view(InputConfig(), Declared(), digits) is None
    # the data's own values given explicitly are still the data's view
    same = InputConfig(image_size=8, mean=[0.0], std=[1.0], channels=1)
    assert resolve_view(same, None, digits) is None
    view = resolve(same, None, digits, key="student")
    assert view is not None and is_data_view(view, digits) and view.origin["image_size"] == "config"


def test_each_field_from_config_else_model_else_data(digits) -> None:
    declared = Declared(image_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=3)
    view = resolve_view(InputConfig(image_size=16), declared, digits, key="teacher")
    assert view is not None
    assert (view.image_size, view.channels, view.mean) == (16, 3, (0.485, 0.456, 0.406))
    assert view.origin == {"image_size": "config", "mean": "model", "std": "model", "channels": "model"}
    rec = view.record()
    assert rec["kind"] == "image" and rec["image_size"] == 16 and rec["std"] == [0.229, 0.224, 0.225]
    assert rec["from"]["image_size"] == "config" and rec["from"]["channels"] == "model"
    only_data = resolve_view(InputConfig(image_size=12), None, digits)
    assert only_data is not None and only_data.origin["mean"] == "data" and only_data.mean == (0.0,)


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (InputConfig(tokenizer=Path("/nowhere")), r"^teacher\.input\.tokenizer: the digits data are images"),
        (InputConfig(max_length=10), r"^teacher\.input\.max_length: the digits data are images"),
        (InputConfig(mean=[0.5, 0.5]), r"^teacher\.input\.mean: 2 value\(s\) for 1 channel"),
        (InputConfig(channels=3, std=[0.5]), r"^teacher\.input\.std: 1 value\(s\) for 3 channel"),
        (InputConfig(channels=2), r"^teacher\.input\.channels: 2 channels, but the data have 1"),
    ],
)
def test_values_that_do_not_fit_the_data_name_their_key(digits, inputs: InputConfig, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_view(inputs, None, digits, key="teacher")


def test_a_model_declaring_a_wrong_length_is_named_by_its_model_key(digits) -> None:
    with pytest.raises(ConfigError, match=r"^student\.model: 3 value\(s\) for 1 channel"):
        resolve_view(InputConfig(), Declared(mean=(0.5, 0.5, 0.5)), digits, key="student")


# ------------------------------------------------------------------ image views


def test_tensor_image_view_resizes_converts_and_normalises(digits) -> None:
    view = resolve_view(InputConfig(image_size=16, mean=[0.5] * 3, std=[0.25] * 3, channels=3), None, digits)
    assert view is not None and view.input_shape() == (3, 16, 16)
    x = build_view(view, digits, "val")
    assert x.shape == (len(digits.val), 3, 16, 16) and x.dtype == torch.float32
    ref = F.interpolate(digits.val.x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(x[:, 1:2], (ref - 0.5) / 0.25, rtol=0, atol=1e-6)
    assert torch.equal(x[:, 0], x[:, 2])  # grey repeated to every channel
    # a few rows alone are those rows of the whole view
    rows = torch.tensor([5, 0, 3])
    torch.testing.assert_close(build_view(view, digits, "val", rows=rows), x[rows], rtol=0, atol=0)


def test_view_bundle_keeps_rows_labels_and_sources(digits) -> None:
    view = resolve_view(InputConfig(image_size=10), None, digits)
    seen = view_bundle(view, digits)
    assert seen.input_shape == (1, 10, 10) and seen.classes == digits.classes
    for k in ("train", "val", "test"):
        assert torch.equal(getattr(seen, k).y, getattr(digits, k).y)
    assert digits.train.x.shape[-1] == 8  # the data themselves are left as they are


def test_image_folder_keeps_its_files_through_splits_and_train_limit(tmp_path: Path) -> None:
    root = write_images(tmp_path / "imgs")
    (root / "a" / "broken.png").write_bytes(b"not an image")  # skipped: the files stay aligned with the rows
    cfg = DataConfig(name="image-folder", path=root, image_size=8, cache_dir=tmp_path / "cache", train_limit=12)
    data = build_data(cfg, 0)
    for k in ("train", "val", "test"):
        part = getattr(data, k)
        assert isinstance(part.source, ImageFiles) and len(part.source) == len(part)
        for row in range(len(part)):
            path = Path(part.source.paths[int(part.source.rows[row])])
            assert path.parent.name == data.classes[int(part.y[row])]
            want = decode_image(path, "RGB", (8, 8)).transpose(2, 0, 1)
            assert np.array_equal(part.x[row].numpy(), want)  # row i is the file the source names
    assert len(data.train) == 12
    view = resolve_view(InputConfig(image_size=24), None, data)
    assert view is not None
    x = build_view(view, data, "train")
    assert x.shape == (12, 3, 24, 24)
    # decoded from the original files at 24 px (not upsampled from the 8 px data)
    for row in (0, 7):
        path = Path(data.train.source.paths[int(data.train.source.rows[row])])
        want = torch.from_numpy(decode_image(path, "RGB", (24, 24)).transpose(2, 0, 1).astype(np.float32) / 255)
        torch.testing.assert_close(x[row], want, rtol=0, atol=1e-6)
    # the 24 px decode is cached beside the data's own, keyed by size
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 2
    grey = resolve_view(InputConfig(channels=1, mean=[0.5], std=[0.5]), None, data)
    g = build_view(grey, data, "test")
    torch.testing.assert_close(g, (data.test.x.float().div(255).mean(1, keepdim=True) - 0.5) / 0.5)


# ------------------------------------------------------------------ text views


def test_text_sets_keep_their_raw_texts_aligned(tmp_path: Path) -> None:
    data = build_data(DataConfig(name="text-csv", path=write_csv(tmp_path / "r.csv"), max_len=12, train_limit=30), 0)
    vocab = data.meta["vocab"]
    for k in ("train", "val", "test"):
        part = getattr(data, k)
        assert isinstance(part.source, Texts) and len(part.source) == len(part)
        assert torch.equal(vocab.encode(list(part.source.texts)), part.x)  # row i encodes texts[i]
    longer = resolve_view(InputConfig(max_length=20), None, data)
    assert longer is not None and longer.input_shape() == (20,)
    x = build_view(longer, data, "val")
    assert torch.equal(x[:, :12], data.val.x) and x.shape == (len(data.val), 20)


def test_hf_tokenizer_view_encodes_the_raw_texts(tmp_path: Path) -> None:
    from hf_fixtures import train_tokenizer

    data = build_data(DataConfig(name="text-csv", path=write_csv(tmp_path / "r.csv"), max_len=12), 0)
    tok = train_tokenizer(list(data.train.source.texts))
    tok.save_pretrained(tmp_path / "tok")
    view = resolve_view(InputConfig(tokenizer=tmp_path / "tok", max_length=16), None, data, key="teacher")
    assert view is not None and view.tokenizer == (tmp_path / "tok").resolve()
    x = build_view(view, data, "test")
    want = tok(list(data.test.source.texts), padding="max_length", truncation=True, max_length=16)["input_ids"]
    assert x.dtype == torch.int64 and x.tolist() == want
    assert len({tuple(r) for r in x.tolist()}) > len(x) // 2  # the texts differ, so do their ids


def test_bad_tokenizer_folders_are_one_line(tmp_path: Path) -> None:
    data = build_data(DataConfig(name="text-csv", path=write_csv(tmp_path / "r.csv"), max_len=12), 0)
    with pytest.raises(ConfigError, match=r"^teacher\.input\.tokenizer: tokenizer folder .* does not exist"):
        resolve_view(InputConfig(tokenizer=tmp_path / "missing"), None, data, key="teacher")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^teacher\.input\.tokenizer: cannot load a tokenizer from"):
        load_tokenizer(tmp_path / "empty", "teacher.input.tokenizer")
    with pytest.raises(ConfigError, match=r"^student\.input\.image_size: the text-csv data are text"):
        resolve_view(InputConfig(image_size=32), None, data, key="student")


def test_a_recorded_view_reads_back_with_its_origins() -> None:
    """results.json ``inputs.<who>`` -> View -> record is the identity, origins included, for both
    kinds (a resumed or reloaded run reports where each field came from as the first run did)."""
    from kdlab.data.views import View, from_record

    text = View(kind="text", tokenizer=Path("/models/bert"), max_length=48, origin={"tokenizer": "model"})
    image = View(kind="image", image_size=16, mean=(0.5,), std=(0.25,), channels=1, origin={"image_size": "config"})
    for view in (text, image):
        back = from_record(view.record())
        assert back == view and back.record() == view.record()
    assert from_record(text.record()).record()["from"] == {"tokenizer": "model", "max_length": "data"}
