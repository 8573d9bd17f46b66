"""An exported ONNX file stands alone: its metadata (classes, input shape, preprocessing, vocabulary)
round-trips, and `kdlab predict MODEL.onnx` gives the run folder's predictions without the folder."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from clihelp import assert_one_line_error, run_cli, run_subprocess
from PIL import Image

from kdlab.apps.export import export_onnx
from kdlab.apps.predict import load_onnx, load_run
from kdlab.config import load_experiment
from kdlab.io import FILE_MODE
from kdlab.lab.run import run_lab
from kdlab.version import __version__

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = ["name=tiny", "teacher.model=mlp-teacher", "teacher.epochs=1", "student.epochs=1", "data.train_limit=200"]


def props(path: Path) -> dict[str, str]:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def same_predictions(a: list, b: list) -> None:
    assert [p.label for p in a] == [p.label for p in b]
    for x, y in zip(a, b, strict=True):
        assert x.input == y.input and list(x.probabilities) == list(y.probabilities)
        np.testing.assert_allclose(list(x.probabilities.values()), list(y.probabilities.values()), atol=1e-5)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    run_dir = run_lab(load_experiment("digits", TINY), out=tmp_path_factory.mktemp("run"))
    return run_dir, export_onnx(run_dir, arm="distilled").path


def test_digits_metadata_round_trip(digits: tuple[Path, Path]) -> None:
    run_dir, path = digits
    meta = props(path)
    assert {"kdlab.version", "kdlab.arm", "kdlab.classes", "kdlab.input_shape", "kdlab.preprocessing"} <= set(meta)
    assert "kdlab.vocab" not in meta  # image runs have no vocabulary
    assert meta["kdlab.version"] == __version__ and meta["kdlab.arm"] == "distilled"
    assert json.loads(meta["kdlab.classes"]) == load_run(run_dir, arms=[]).classes == [str(i) for i in range(10)]
    assert json.loads(meta["kdlab.input_shape"]) == [1, 8, 8]
    pre = json.loads(meta["kdlab.preprocessing"])
    assert pre["kind"] == "image" and pre["color"] == "L" and pre["size"] == [8, 8] and pre["dtype"] == "float32"
    assert pre["divide_by"] == 255.0 and pre["source_divide_by"] == 16.0  # digits' own arrays are 0..16
    assert path.stat().st_mode & 0o777 == FILE_MODE  # follows the umask, not mkstemp's 0600


def test_predict_from_onnx_alone_matches_the_run(
    digits: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, path = digits
    rng = np.random.default_rng(0)
    images = []
    for i, size in enumerate((8, 8, 16, 32)):  # 8x8 as trained, and larger ones resized like predict does
        arr = (rng.random((size, size)) * 255).astype(np.uint8)
        images.append(tmp_path / f"digit{i}.png")
        Image.fromarray(arr, mode="L").save(images[-1])
    names = [str(p) for p in images]
    want = load_run(run_dir, arms=["distilled"]).predict(names)
    alone = tmp_path / "alone" / "model.onnx"
    alone.parent.mkdir()
    shutil.copy(path, alone)  # no run folder next to it
    model = load_onnx(alone)
    assert model.classes == [str(i) for i in range(10)] and model.input_shape == (1, 8, 8) and not model.is_text
    got = model.predict(names)
    same_predictions(got, want)
    assert len({p.label for p in want}) > 1 or len({round(p.probability, 4) for p in want}) > 1  # inputs matter

    res = run_cli(["predict", str(alone), *names, "--json"], capsys)
    assert res.code == 0, res.err
    assert [p["label"] for p in json.loads(res.out)] == [p.label for p in want]


def test_onnx_without_kdlab_metadata_is_one_line_error(
    digits: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    proto = onnx.load(str(digits[1]))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), mode="L").save(png)
    assert_one_line_error(run_cli(["predict", str(bare), str(png)], capsys), "not a kdlab export")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert_one_line_error(run_cli(["predict", str(tmp_path / "junk.onnx"), str(png)], capsys), "not a readable ONNX")


def test_text_export_embeds_vocabulary_and_prints_one_line(tmp_path: Path) -> None:
    from text_corpus import reviews, write_table

    data = write_table(tmp_path / "reviews.csv", reviews(200))
    sets = [f"data.path={data}", "teacher.epochs=1", "student.epochs=1", "data.vocab_size=300", "data.max_len=40"]
    run_dir = run_lab(load_experiment("text-csv", sets), out=tmp_path / "runs")
    res = run_subprocess(["export", str(run_dir)])  # the exporter's own narration must not leak out
    assert res.code == 0, res.err
    said = " ".join(res.out.split())  # the one line, however the terminal wraps it
    assert res.err == "" and re.fullmatch(r"exported distilled: \S+ \(max \|onnx - torch\| = \S+ <= 0\.0001\)", said)
    path = run_dir / "export" / "distilled.onnx"

    meta = props(path)
    pre = json.loads(meta["kdlab.preprocessing"])
    assert pre["kind"] == "text" and pre["max_len"] == 40 and pre["vocab"] == "kdlab.vocab"
    assert json.loads(meta["kdlab.vocab"]) == json.loads((run_dir / "vocab.json").read_text())
    assert json.loads(meta["kdlab.input_shape"]) == [40]

    texts = ["a wonderful film, loved it", "dull and boring, far too long", "unknownword zzz", "great"]
    want = load_run(run_dir, arms=["distilled"]).predict(texts)
    alone = tmp_path / "model.onnx"
    shutil.copy(path, alone)
    shutil.rmtree(run_dir)  # vocabulary and classes come from the file alone
    model = load_onnx(alone)
    assert model.is_text and model.classes == ["neg", "pos"]
    same_predictions(model.predict(texts), want)
    assert os.stat(alone).st_size > 0
