"""Hostile corpus: unexpected data files and `kdlab predict` inputs.

Each case builds its input under tmp_path and runs the real CLI under a memory and time limit.
A bad file is one `error: ` line naming the file (and line), exit 2, no run folder left; an odd
but usable one (unicode labels, NUL bytes, a FIFO or a decompression bomb among images) gives a
finished run whose results.json lists what was skipped. No case may hang (FIFOs) or blow up.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bounded import assert_clean_error, assert_nothing_written, run_bounded
from PIL import Image

import kdlab.apps.predict

MEM_MB = 1024
FAST = ["--set", "device=cpu", "--set", "teacher.epochs=1", "--set", "student.epochs=1", "-q"]
TEXT = [*FAST, "--set", "teacher.model=bag-teacher", "--set", "student.model=bag-student", "--set", "data.max_len=8"]
IMAGE = [*FAST, "--set", "teacher.model=mlp-teacher", "--set", "data.image_size=8", "--set", "data.train_limit=100"]
WORDS = ["good fine great", "bad poor awful", "plain flat grey"]


@pytest.fixture(scope="module", autouse=True)
def _no_report() -> Iterator[None]:
    """The runs here test data reading: their children skip report.html (matplotlib, 1.5 s a run)
    and start warm (what the first optimizer imports, 1.5 s, is imported once here)."""
    import torch

    import kdlab.cli

    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kdlab.cli, "_write_report_safely", lambda folder: None)
        yield


def _rows(labels: list[str], n: int = 20) -> list[tuple[str, str]]:
    """``n`` rows per label, texts told apart by words."""
    return [(f"{WORDS[i % 3]} row {j}", label) for i, label in enumerate(labels) for j in range(n)]


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f'"{t}",{y}\n' for t, y in rows), encoding="utf-8")
    return path


def _jsonl(path: Path, lines: list[str]) -> Path:
    good = [json.dumps({"text": t, "label": y}) for t, y in _rows(["a", "b"], 5)]
    path.write_text("\n".join([good[0], *lines, *good[1:]]) + "\n", encoding="utf-8")
    return path


def _sparse(path: Path, head: bytes, size: int) -> Path:
    """``head`` then NUL bytes up to ``size``: a huge file that takes no disk space."""
    with path.open("wb") as f:
        f.write(head)
        f.truncate(size)
    return path


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def _png_header(path: Path, w: int, h: int, *, valid: bool = False) -> Path:
    """A 1-bit PNG of ``w``×``h`` pixels that takes a few KB on disk: its header, then all the
    (zero) rows when ``valid``, else a few bytes of them (a header that lies)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    pack = zlib.compressobj(9)
    rows = (pack.compress(bytes(1 + (w + 7) // 8)) for _ in range(h if valid else 1))
    idat = b"".join(rows) + pack.flush()
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def _images(root: Path, classes: tuple[str, ...] = ("cat", "dog"), n: int = 12) -> Path:
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("L", (8, 8), (40 * k + 7 * i) % 255).save(root / cls / f"{i}.png")
    return root


def _text_run(path: Path, tmp: Path, name: str = "text-csv") -> list[str]:
    return [
        "run",
        "text-csv",
        "--set",
        f"data.name={name}",
        "--set",
        f"data.path={path}",
        *TEXT,
        "--out",
        str(tmp / "runs"),
    ]


def _image_run(root: Path, tmp: Path) -> list[str]:
    args = ["run", "digits", "--set", "data.name=image-folder", "--set", f"data.path={root}", *IMAGE]
    return [*args, "--out", str(tmp / "runs")]


def _results(tmp: Path) -> dict[str, Any]:
    (run,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Bad data files for `kdlab run`: one line naming the file (and line), exit 2, nothing written

Build = Callable[[Path], list[str]]


def _deep_jsonl(tmp: Path) -> list[str]:
    return _text_run(_jsonl(tmp / "d.jsonl", ["[" * 50_000 + "]" * 50_000]), tmp)


def _deep_value(tmp: Path) -> list[str]:
    return _text_run(_jsonl(tmp / "d.jsonl", ['{"label": "a", "text": ' + "[" * 50_000 + "]" * 50_000 + "}"]), tmp)


BAD_RUNS: dict[str, tuple[Build, str]] = {
    "JSONL nested 50,000 deep": (_deep_jsonl, r"d\.jsonl:2: JSON nested too deeply"),
    "JSONL value nested 50,000 deep": (_deep_value, r"d\.jsonl:2: JSON nested too deeply"),
    "JSONL text is a list": (
        lambda tmp: _text_run(_jsonl(tmp / "d.jsonl", ['{"text": ["a", "b"], "label": "a"}']), tmp),
        r"d\.jsonl:2: 'text' is an array, not a string",
    ),
    "JSONL label is an object": (
        lambda tmp: _text_run(_jsonl(tmp / "d.jsonl", ['{"text": "x", "label": {"k": 1}}']), tmp),
        r"d\.jsonl:2: 'label' is an object, not a string",
    ),
    "JSONL integer of 5,000 digits": (
        lambda tmp: _text_run(_jsonl(tmp / "d.jsonl", ['{"text": "x", "label": ' + "9" * 5000 + "}"]), tmp),
        r"d\.jsonl:2: not a JSON object \(Exceeds the limit",
    ),
    "JSONL line not JSON": (
        lambda tmp: _text_run(_jsonl(tmp / "d.jsonl", ["", '{"text": "x", "label"']), tmp),
        r"d\.jsonl:3: not a JSON object",
    ),
    "CSV with a 2 GB single line": (
        lambda tmp: _text_run(_sparse(tmp / "d.csv", b"text,label\n", 2**31), tmp),
        r"d\.csv:2: a line longer than 16 MiB",
    ),
    "CSV field over 16 Mi characters (unbalanced quote)": (
        lambda tmp: _text_run(_csv_open_quote(tmp / "d.csv"), tmp),
        r"d\.csv:\d+: a field longer than 16 Mi characters",
    ),
    "CSV in latin-1": (
        lambda tmp: _text_run(_write(tmp / "d.csv", "text,label\ncafé crème,a\n".encode("latin-1")), tmp),
        r"d\.csv: not UTF-8 text \(line 2, byte 14: b'\\xe9'\); re-save it as UTF-8",
    ),
    "binary file named .csv": (
        lambda tmp: _text_run(_write(tmp / "d.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xd8"), tmp),
        r"d\.csv: not UTF-8 text \(line \d, byte \d+",
    ),
    "BOM then a missing label column": (
        lambda tmp: _text_run(_write(tmp / "d.csv", "\ufefftext,lbl\nx,a\n".encode()), tmp),
        r"no label column 'label' \(columns: text, lbl\); set data\.label_column",
    ),
    "empty file": (lambda tmp: _text_run(_write(tmp / "d.csv", b""), tmp), r"d\.csv: the file is empty"),
    "whitespace-only JSONL": (
        lambda tmp: _text_run(_write(tmp / "d.jsonl", b"\n  \r\n\t\n"), tmp),
        r"d\.jsonl: the file is empty",
    ),
    "header without the text column": (
        lambda tmp: _text_run(_csv(tmp / "d.csv", _rows(["a", "b"]), header="body,label"), tmp),
        r"d\.csv: no text column 'text' \(columns: body, label\); set data\.text_column",
    ),
    "header of 100,000 columns": (
        lambda tmp: _text_run(_write(tmp / "d.csv", (",".join(f"c{i}" for i in range(100_000)) + "\n").encode()), tmp),
        r"no text column 'text' \(columns: c0, c1, .*… \(100000 in all\)\)",
    ),
    "every label empty": (
        lambda tmp: _text_run(_csv(tmp / "d.csv", [(t, "") for t, _ in _rows(["a"])]), tmp),
        r"d\.csv: no rows with both a text and a label \(20 empty rows skipped\)",
    ),
    "only one class": (
        lambda tmp: _text_run(_csv(tmp / "d.csv", _rows(["pos"])), tmp),
        r"d\.csv: the label column has 1 class \('pos'\)",
    ),
    "one class whose label is 1 MB": (
        lambda tmp: _text_run(_csv(tmp / "d.csv", _rows(["x" * 2**20], n=3)), tmp),
        r"the label column has 1 class \('x{39}…'\)",
    ),
    "data.path is a FIFO": (
        lambda tmp: _text_run(_fifo(tmp / "d.csv"), tmp),
        r"data\.path: .*d\.csv is a FIFO \(named pipe\), not",
    ),
    "train.csv of a folder is a FIFO": (
        lambda tmp: _text_run(_fifo_train(tmp / "data"), tmp),
        r"data\.path: .*train\.csv is a FIFO \(named pipe\), not a regular file",
    ),
    "data.path is /dev/zero": (lambda tmp: _text_run(Path("/dev/zero"), tmp), r"/dev/zero is a device"),
    "IDX header claiming 2^40 values": (
        lambda tmp: _fashion(tmp, struct.pack(">4B4I", 0, 0, 8, 4, 1024, 1024, 1024, 1024)),
        r"train-images-idx3-ubyte\.gz: IDX header claims 1,099,511,627,776 values, more than",
    ),
    "IDX header cut short": (
        lambda tmp: _fashion(tmp, b"\0\0\x08\x03\0\0"),
        r"train-images-idx3-ubyte\.gz: IDX header is truncated \(2 of 12 bytes",
    ),
    "IDX gzip inflating to 2 GB": (
        lambda tmp: _fashion(tmp, struct.pack(">4B3I", 0, 0, 8, 3, 10, 28, 28), inflate_to=2**31),
        r"train-images-idx3-ubyte\.gz: IDX file holds more than the 7,840 values its header claims",
    ),
    "aclImdb without pos/": (
        lambda tmp: _text_run(_acl_without_pos(tmp / "aclImdb"), tmp, name="aclimdb"),
        r"has no 'pos' folder",
    ),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _csv_open_quote(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        f.write('text,label\na,b\n"never closed\n')
        line = "a" * 1023 + "\n"
        for _ in range(17 * 1024):  # 17 MiB of short lines inside one quoted field
            f.write(line)
    return path


def _fashion(tmp: Path, train_images: bytes, inflate_to: int = 0) -> list[str]:
    """Fashion-MNIST's four files, the training images being ``train_images`` then ``inflate_to``
    zero bytes (as 1 MiB gzip members: a 2 GB inflation costs 2 MB on disk)."""
    import gzip

    root = tmp / "fashion"
    root.mkdir()
    member = gzip.compress(bytes(2**20), compresslevel=1)
    with (root / "train-images-idx3-ubyte.gz").open("wb") as f:
        f.write(gzip.compress(train_images))
        for _ in range(inflate_to // 2**20):
            f.write(member)
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / f"{name}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x00"))
    return [
        "run",
        "digits",
        "--set",
        "data.name=fashion-mnist",
        "--set",
        f"data.path={root}",
        *FAST,
        "--out",
        str(tmp / "runs"),
    ]


def _fifo_train(root: Path) -> Path:
    root.mkdir()
    _fifo(root / "train.csv")
    _csv(root / "test.csv", _rows(["a", "b"]))
    return root


def _acl_without_pos(root: Path) -> Path:
    for part in ("train", "test"):
        (root / part / "neg").mkdir(parents=True)
        (root / part / "neg" / "0_1.txt").write_text("bad")
    return root


@pytest.mark.parametrize("name", list(BAD_RUNS))
def test_bad_data_file_is_one_line_exit_2(name: str, tmp_path: Path) -> None:
    build, expected = BAD_RUNS[name]
    res = run_bounded(build(tmp_path), mem_mb=MEM_MB, timeout=45)
    assert_clean_error(res, match=expected)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert_nothing_written(tmp_path)


# --------------------------------------------------------------------------------------------
# Odd but usable data: the run finishes and results.json says what was skipped


def _unicode_labels(tmp: Path) -> list[str]:
    return _text_run(_csv(tmp / "d.csv", _rows(["²", "٣", "10"])), tmp)


def _check_unicode_labels(res: dict[str, Any], tmp: Path) -> None:
    # not every label is an ASCII integer, so all sort as strings; '٣' (which int() reads as 3) stays a name
    assert res["data"]["classes"] == ["10", "²", "٣"]


def _integer_labels(tmp: Path) -> list[str]:
    return _text_run(_csv(tmp / "d.csv", _rows(["10", "2", "-1"])), tmp)


def _nul_bytes(tmp: Path) -> list[str]:
    rows = [(f"{t}\x00tail", y) for t, y in _rows(["a", "b"])]
    return _text_run(_csv(tmp / "d.csv", rows), tmp)


def _acl_odd_files(tmp: Path) -> list[str]:
    base = tmp / "aclImdb"
    for part in ("train", "test"):
        for label, (t, _y) in zip(("neg", "pos"), _rows(["x", "y"], 1), strict=True):
            (base / part / label).mkdir(parents=True)
            for i in range(20):
                (base / part / label / f"{i}_5.txt").write_text(f"{t} {i}", encoding="utf-8")
    odd = base / "train" / "pos"
    (odd / "latin1.txt").write_bytes("très bien".encode("latin-1"))
    _fifo(odd / "fifo.txt")
    _sparse(odd / "huge.txt", b"long ", 20 * 2**20)
    (odd / "folder.txt").mkdir()
    return _text_run(base, tmp, name="aclimdb")


def _check_acl_odd_files(res: dict[str, Any], tmp: Path) -> None:
    skipped = sorted(Path(p).name for p in res["data"]["skipped_files"])
    assert skipped == ["fifo.txt", "folder.txt", "huge.txt", "latin1.txt"]
    assert res["data"]["train"] + res["data"]["val"] == 40


def _odd_image_files(tmp: Path) -> list[str]:
    root = _images(tmp / "d")
    _fifo(root / "cat" / "fifo.png")
    (root / "cat" / "zero.png").symlink_to("/dev/zero")
    (root / "cat" / "self.png").symlink_to(root / "cat" / "self.png")  # a symlink loop
    (root / "dog" / "up").symlink_to(root)  # a folder loop: not followed
    (root / "dog" / "empty.png").write_bytes(b"")
    return _image_run(root, tmp)


def _check_odd_image_files(res: dict[str, Any], tmp: Path) -> None:
    skipped = sorted(Path(p).name for p in res["data"]["skipped_files"])
    assert skipped == ["empty.png", "fifo.png", "self.png", "zero.png"]
    assert res["data"]["train"] + res["data"]["val"] + res["data"]["test"] == 24


def _image_bombs(tmp: Path) -> list[str]:
    root = _images(tmp / "d")
    _png_header(root / "cat" / "bomb-20000.png", 20_000, 20_000)  # Pillow: DecompressionBombError
    _png_header(root / "dog" / "bomb-10000.png", 10_000, 10_000, valid=True)  # Pillow only warns
    return _image_run(root, tmp)


def _check_image_bombs(res: dict[str, Any], tmp: Path) -> None:
    assert sorted(Path(p).name for p in res["data"]["skipped_files"]) == ["bomb-10000.png", "bomb-20000.png"]


def _odd_class_names(tmp: Path) -> list[str]:
    return _image_run(_images(tmp / "d", classes=("[bold red]x\nline", "<script>alert(1)<script>")), tmp)


def _check_odd_class_names(res: dict[str, Any], tmp: Path) -> None:
    assert res["data"]["classes"] == ["<script>alert(1)<script>", "[bold red]x\nline"]


def _check_integer_labels(res: dict[str, Any], tmp: Path) -> None:
    assert res["data"]["classes"] == ["-1", "2", "10"]


def _check_nul_bytes(res: dict[str, Any], tmp: Path) -> None:
    assert res["data"]["train"] + res["data"]["val"] + res["data"]["test"] == 40
    assert res["data"]["skipped_count"] == 0


ODD_RUNS: dict[str, tuple[Build, Callable[[dict[str, Any], Path], None]]] = {
    "unicode-digit labels": (_unicode_labels, _check_unicode_labels),
    "integer labels sort numerically": (_integer_labels, _check_integer_labels),
    "NUL bytes inside CSV fields": (_nul_bytes, _check_nul_bytes),
    "aclImdb: latin-1, FIFO, 20 MB and folder reviews": (_acl_odd_files, _check_acl_odd_files),
    "image folder: FIFO, /dev/zero link, symlink loops, 0 bytes": (_odd_image_files, _check_odd_image_files),
    "image folder: 20000x20000 and 10000x10000 images": (_image_bombs, _check_image_bombs),
    "class folders named with markup and a newline": (_odd_class_names, _check_odd_class_names),
}


@pytest.mark.parametrize("name", list(ODD_RUNS))
def test_odd_data_finishes_and_records_what_was_skipped(name: str, tmp_path: Path) -> None:
    build, check = ODD_RUNS[name]
    res = run_bounded(build(tmp_path), mem_mb=MEM_MB, timeout=60)
    assert not res.timed_out, f"timed out after {res.seconds:.0f} s"
    assert res.code == 0 and "Traceback" not in res.err, res.err[-3000:]
    assert not res.err.strip(), res.err  # quiet: no Pillow warning, no stray line
    results = _results(tmp_path)
    assert results["status"] == "complete"
    check(results, tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file anyway")
def test_unreadable_image_is_skipped(tmp_path: Path) -> None:
    root = _images(tmp_path / "d")
    (root / "cat" / "locked.png").write_bytes((root / "cat" / "0.png").read_bytes())
    (root / "cat" / "locked.png").chmod(0)
    res = run_bounded(_image_run(root, tmp_path), mem_mb=MEM_MB, timeout=60)
    assert res.code == 0, res.err[-3000:]
    assert [Path(p).name for p in _results(tmp_path)["data"]["skipped_files"]] == ["locked.png"]


# --------------------------------------------------------------------------------------------
# `kdlab predict` on tiny finished runs


def _finished_run(tmp: Path, args: list[str]) -> Path:
    res = run_bounded([*args, "--out", str(tmp / "runs")], mem_mb=MEM_MB, timeout=120)
    assert res.code == 0, res.err[-3000:]
    (run,) = [p for p in (tmp / "runs").iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("text-run")
    data = _csv(tmp / "d.csv", _rows(["neg", "pos"]))
    return _finished_run(tmp, ["run", "text-csv", "--set", f"data.path={data}", *TEXT])


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("image-run")
    digits = [*FAST, "--set", "teacher.model=mlp-teacher", "--set", "data.train_limit=100"]  # no data.image_size
    return _finished_run(tmp, ["run", "digits", *digits])


PredictBuild = Callable[[Path, pytest.MonkeyPatch], list[str]]


def _lines_file(tmp: Path, n: int) -> Path:
    path = tmp / "lines.txt"
    path.write_text("".join(f"good text {i}\n" for i in range(n)), encoding="utf-8")
    return path


def _many_stdin(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    mp.setattr(kdlab.apps.predict, "MAX_INPUTS", 1000)
    data = _lines_file(tmp, 1500).read_bytes()
    mp.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))  # the forked child reads it
    return ["-"]


def _over_budget(tmp: Path, mp: pytest.MonkeyPatch) -> list[str]:
    mp.setattr(kdlab.apps.predict, "MAX_INPUT_BYTES", 2**20)
    return [str(_lines_file(tmp, 100_000))]  # 1.5 MB of lines


TEXT_PREDICT: dict[str, tuple[PredictBuild, str]] = {
    "binary text file": (
        lambda tmp, mp: [str(_write(tmp / "in.txt", b"ok line\n\x89PNG\xff\xfe\x00"))],
        r"in\.txt: not UTF-8 text \(line 2, byte 8: b'\\x89'\)",
    ),
    "a 2 GB text file of one line": (
        lambda tmp, mp: [str(_sparse(tmp / "in.txt", b"x", 2**31))],
        r"in\.txt:1: a line longer than 16 MiB",
    ),
    "a text file over the byte budget": (_over_budget, r"lines\.txt: more than 1 MiB of text; kdlab predict reads at"),
    "more inputs on stdin than the limit": (_many_stdin, r"standard input: more than 1,000 inputs"),
    "a FIFO as text input": (
        lambda tmp, mp: [str(_fifo(tmp / "in.txt"))],
        r"in\.txt: is a FIFO \(named pipe\), not a text file; pipe its texts into",
    ),
    "/dev/zero as text input": (lambda tmp, mp: ["/dev/zero"], r"/dev/zero: is a device, not a text file"),
}


@pytest.mark.parametrize("name", list(TEXT_PREDICT))
def test_predict_bad_text_input_is_one_line(
    name: str, text_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build, expected = TEXT_PREDICT[name]
    res = run_bounded(["predict", str(text_run), *build(tmp_path, monkeypatch)], mem_mb=MEM_MB, timeout=30)
    assert_clean_error(res, match=expected)
    assert not res.out.strip()  # nothing half-printed


def test_predict_text_longer_than_a_path_is_a_text(text_run: Path) -> None:
    res = run_bounded(["predict", str(text_run), "--json", "good " * 2000], mem_mb=MEM_MB, timeout=30)
    assert res.code == 0 and not res.err.strip(), res.err[-3000:]
    (pred,) = json.loads(res.out)
    assert pred["input"].startswith("good good") and pred["label"] in ("neg", "pos")


IMAGE_PREDICT: dict[str, tuple[Callable[[Path], Path], str]] = {
    "20000x20000 image": (
        lambda tmp: _png_header(tmp / "big.png", 20_000, 20_000),
        r"big\.png: image too large to decode \(more than twice the 89,478,485-pixel limit\); resize it",
    ),
    "10000x10000 image (Pillow only warns)": (
        lambda tmp: _png_header(tmp / "big.png", 10_000, 10_000, valid=True),
        r"big\.png: image too large to decode \(10000×10000 = 100,000,000 pixels, over the 89,478,485-pixel",
    ),
    "FIFO named .png": (lambda tmp: _fifo(tmp / "in.png"), r"in\.png: is a FIFO \(named pipe\), not a regular file"),
    "folder named .png": (lambda tmp: _mkdir(tmp / "in.png"), r"in\.png: is a folder, not a regular file"),
    "/dev/zero as an image": (lambda tmp: Path("/dev/zero"), r"/dev/zero: is a device, not a regular file"),
    "truncated PNG": (
        lambda tmp: _write(tmp / "t.png", _png_bytes()[:60]),
        r"t\.png: cannot read as an image \(\w+\)",
    ),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("name", list(IMAGE_PREDICT))
def test_predict_bad_image_is_one_line(name: str, image_run: Path, tmp_path: Path) -> None:
    build, expected = IMAGE_PREDICT[name]
    res = run_bounded(["predict", str(image_run), str(build(tmp_path))], mem_mb=MEM_MB, timeout=30)
    assert_clean_error(res, match=expected)
    assert not res.out.strip()
