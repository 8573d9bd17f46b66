"""The bad-files corpus: every broken input gives one line on stderr and exit status 2 (never a
traceback), or, for a data file, a counted skip; convertible images load."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelp import run_cli
from PIL import Image

from kdlab.config.schema import DataConfig
from kdlab.data.bundle import build_data
from kdlab.io import save_weights
from kdlab.models import create_model

TINY = ["--set", "device=cpu", "--set", "teacher.model=mlp-teacher", "--set", "teacher.epochs=1"]
TINY += ["--set", "student.epochs=1", "--set", "data.train_limit=100", "-q"]


def _png(path: Path, value: int, mode: str = "RGB", fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color: int | tuple[int, ...] = {"RGB": (value,) * 3, "L": value, "RGBA": (value, value, value, 7)}.get(
        mode, (0, 0, 0, value)
    )
    Image.new(mode, (8, 8), color).save(path, format=fmt)


def _folder(root: Path, counts: dict[str, int]) -> Path:
    for cls, n in counts.items():
        for i in range(n):
            _png(root / cls / f"{i}.png", 20 * i % 255)
    return root


def _image_args(root: Path) -> list[str]:
    return [*TINY, "--set", "data.name=image-folder", "--set", f"data.path={root}", "--set", "data.image_size=8"]


# Each case builds its input under tmp_path and returns the CLI arguments after `kdlab`.
Case = Callable[[Path], list[str]]


def _yaml(text: str) -> Case:
    def build(tmp: Path) -> list[str]:
        (tmp / "exp.yaml").write_text(text)
        return ["run", str(tmp / "exp.yaml")]

    return build


def _teacher_checkpoint(make: Callable[[Path], None]) -> Case:
    def build(tmp: Path) -> list[str]:
        path = tmp / "teacher.safetensors"
        make(path)
        return ["run", "digits", *TINY, "--set", f"teacher.checkpoint={path}", "--out", str(tmp / "runs")]

    return build


def _other_architecture(path: Path) -> None:
    save_weights(create_model("mlp-student", num_classes=10, input_shape=(1, 8, 8)), path)


def _truncated_safetensors(path: Path) -> None:
    save_weights(create_model("mlp-teacher", num_classes=10, input_shape=(1, 8, 8)), path)
    path.write_bytes(path.read_bytes()[:1000])


def _out_is(make: Callable[[Path], Path]) -> Case:
    return lambda tmp: ["run", "digits", *TINY, "--out", str(make(tmp))]


def _a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file"


CASES: dict[str, tuple[Case, str]] = {
    "empty dataset folder": (
        lambda tmp: ["run", "digits", *_image_args(_mkdir(tmp / "empty")), "--out", str(tmp / "runs")],
        "has 0 class folder(s)",
    ),
    "one class": (
        lambda tmp: ["run", "digits", *_image_args(_folder(tmp / "d", {"cat": 12})), "--out", str(tmp / "runs")],
        "has 1 class folder(s)",
    ),
    "class too small for the split": (
        lambda tmp: ["run", "digits", *_image_args(_folder(tmp / "d", {"cat": 30, "dog": 1})), "--out", str(tmp)],
        "cannot split 31 samples",
    ),
    "every image corrupt": (
        lambda tmp: ["run", "digits", *_image_args(_corrupt_folder(tmp / "d")), "--out", str(tmp / "runs")],
        "none of the 4 files",
    ),
    "missing dataset path": (
        lambda tmp: ["run", "digits", *_image_args(tmp / "nowhere"), "--out", str(tmp / "runs")],
        "is not a folder",
    ),
    "YAML not a mapping": (_yaml("- a\n- b\n"), "must be a mapping of config keys (got a list)"),
    "YAML syntax error": (_yaml("name: [unclosed\n"), "not valid YAML"),
    "YAML unknown key": (_yaml("train:\n  learning_rate: 0.1\n"), "train.learning_rate: unknown key"),
    "negative epochs": (lambda tmp: ["run", "--set", "student.epochs=-1"], "student.epochs: Input should be"),
    "alpha above 1": (lambda tmp: ["run", "--set", "distill.alpha=1.5"], "distill.alpha: Input should be"),
    "alpha below 0": (lambda tmp: ["run", "--set", "distill.alpha=-0.1"], "distill.alpha: Input should be"),
    "checkpoint of another architecture": (
        _teacher_checkpoint(_other_architecture),
        "does not fit the teacher 'mlp-teacher' architecture",
    ),
    "truncated safetensors": (_teacher_checkpoint(_truncated_safetensors), "not a readable safetensors file"),
    "--out is a file": (_out_is(_a_file), "is a file, not a folder"),
    "--out under a file": (_out_is(lambda tmp: _a_file(tmp) / "runs"), "cannot create"),
    "--out under /proc": (_out_is(lambda tmp: Path("/proc/kdlab-runs")), "cannot create"),
    "--resume of a non-run folder": (lambda tmp: ["run", "--resume", str(tmp)], "not a run folder"),
    "--resume with an experiment": (lambda tmp: ["run", "digits", "--resume", str(tmp)], "give no experiment"),
}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _corrupt_folder(root: Path) -> Path:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        (root / cls / "zero.jpg").write_bytes(b"")
        (root / cls / "junk.png").write_bytes(b"\x89PNG not really")
    return root


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2(name: str, tmp_path: Path, capsys) -> None:
    if name == "--out under /proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")
    build, expected = CASES[name]
    code, _out, err = _cli([*build(tmp_path)], capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = tmp_path / "teacher.pt"
    torch.save({"net.1.weight": Payload()}, evil)
    args = ["run", "digits", *TINY, "--set", f"teacher.checkpoint={evil}", "--out", str(tmp_path / "runs")]
    code, _out, err = _cli(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "refused or unreadable" in err and "never executed" in err
    assert not marker.exists(), "loading the checkpoint ran code from the pickle"
    # The payload is real: a plain unpickling would have run it.
    torch.load(evil, weights_only=False)
    assert marker.is_dir()


def test_damaged_and_odd_images_are_skipped_or_converted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "d", {"cat": 12, "dog": 12})
    noise = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    full = tmp_path / "full.jpg"
    Image.fromarray(noise).save(full, format="JPEG")
    (root / "cat" / "truncated.jpg").write_bytes(full.read_bytes()[:600])
    (root / "cat" / "zero.jpg").write_bytes(b"")
    (root / "dog" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    _png(root / "dog" / "png-named.jpg", 40)  # a PNG with a .jpg name: decoded by content
    _png(root / "dog" / "gray.png", 100, mode="L")
    _png(root / "dog" / "cmyk.jpg", 0, mode="CMYK", fmt="JPEG")
    _png(root / "cat" / "alpha.png", 60, mode="RGBA")
    cfg = DataConfig(name="image-folder", path=root, image_size=8, cache_dir=tmp_path / "cache")
    data = build_data(cfg, seed=0)
    summary = data.summary()
    skipped = sorted(Path(p).name for p in summary["skipped_files"])
    assert skipped == ["corrupt.jpg", "truncated.jpg", "zero.jpg"]
    assert summary["skipped_count"] == 3
    assert summary["train"] + summary["val"] + summary["test"] == 24 + 4
    # Converted to 3-channel RGB: the gray image's pixels are (100, 100, 100) everywhere.
    x = torch.cat([data.train.x, data.val.x, data.test.x])
    assert x.shape[1:] == (3, 8, 8)
    assert any(bool((img == 100).all()) for img in x)
    assert any(bool((img == 60).all()) for img in x)  # RGBA: alpha dropped, colour kept


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    res = run_cli(args, capsys)
    return res.code, res.out, res.err
