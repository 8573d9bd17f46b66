"""Hostile corpus: run folders that lie.

Three tiny real run folders are made once (a finished digits run, a finished text run, and a
digits run stopped in the scratch arm with a checkpoint on disk). Each case copies one, tampers
with one record (results.json, history.csv, env.json, config.resolved.yaml, vocab.json, a weights
file, a checkpoint, comparison.json) and runs a reader of run folders under a memory and time
limit: `show`, `report`, `predict`, `export`, `run --resume`, `compare --resume`. Every case must
end in one `error: ` line naming the file and the field, exit 2, with nothing written into the
folder (no temporary file, no report, no changed record) and the finished results intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from bounded import assert_clean_error, run_bounded

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

MEM_MB = 1024
TIMEOUT = 60
SETS = ["device=cpu", "teacher.model=mlp-teacher", "student.model=mlp-student", "teacher.epochs=1"]
SETS += ["student.epochs=1", "data.train_limit=100"]
TEXT_SETS = ["device=cpu", "teacher.model=bag-teacher", "student.model=bag-student", "data.max_len=24"]
TEXT_SETS += ["teacher.epochs=1", "student.epochs=1"]


BASES: dict[str, Path] = {}
"""The fixture's folders, for a tampering that needs another base than the one it edits."""


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The untouched run folders every case copies: ``done``, ``text``, ``stopped``, ``comparison``."""
    from text_corpus import reviews, write_table

    from kdlab.config import load_experiment
    from kdlab.errors import RunInterrupted
    from kdlab.lab.compare import write_comparison
    from kdlab.lab.run import run_lab

    root = tmp_path_factory.mktemp("bases")
    out: dict[str, Path] = {}
    cfg = load_experiment("digits", SETS)
    out["done"] = run_lab(cfg, run_dir=_mkdir(root / "done"))
    data = write_table(root / "reviews.csv", reviews(120))
    out["text"] = run_lab(load_experiment("text-csv", [*TEXT_SETS, f"data.path={data}"]), run_dir=_mkdir(root / "text"))
    stopped = _mkdir(root / "stopped")
    two = load_experiment("digits", [*SETS, "student.epochs=2"])
    with pytest.raises(RunInterrupted):
        run_lab(two, run_dir=stopped, stop=lambda: (stopped / "checkpoints/scratch/latest.json").is_file())
    out["stopped"] = stopped
    comp = _mkdir(root / "comparison")
    shutil.copytree(out["done"], comp / "seed-0")
    shutil.copy(out["done"] / "config.resolved.yaml", comp / "config.resolved.yaml")
    shutil.copy(out["done"] / "env.json", comp / "env.json")
    write_comparison(comp, cfg, {}, [0], status="complete")
    out["comparison"] = comp
    BASES.update(out)
    return out


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


# --------------------------------------------------------------------------------------------
# Tampering helpers


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _put(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2), encoding="utf-8")


def _edit(name: str, change: Callable[[Any], Any]) -> Callable[[Path], None]:
    """Edit the JSON file ``name`` of the run folder in place (``change`` edits the parsed object)."""

    def tamper(run: Path) -> None:
        obj = _json(run / name)
        change(obj)
        _put(run / name, obj)

    return tamper


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        if isinstance(content, bytes):
            (run / name).write_bytes(content)
        else:
            (run / name).write_text(content, encoding="utf-8")

    return tamper


def _sparse(name: str, size: int) -> Callable[[Path], None]:
    """Replace ``name`` by a file of ``size`` bytes that takes no disk space."""

    def tamper(run: Path) -> None:
        with (run / name).open("wb") as f:
            f.write(b'{"arms": ')
            f.truncate(size)

    return tamper


def _set(obj: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        obj = obj[int(p)] if isinstance(obj, list) else obj[p]
    if isinstance(obj, list):
        obj[int(last)] = value
    else:
        obj[last] = value


def _results(dotted: str, value: Any) -> Callable[[Path], None]:
    return _edit("results.json", lambda r: _set(r, dotted, value))


def _st_dtype(path: Path, prefix: str = "") -> str:
    """Relabel the first F32 tensor (name starting with ``prefix``) of a safetensors file as I32:
    the same byte size, so the file stays readable, but every number becomes garbage. Returns its name."""
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = blob[8 : 8 + n]
    key = next(k for k in sorted(json.loads(header)) if k.startswith(prefix) and k != "__metadata__")
    needle = json.dumps(key).encode() + b':{"dtype":"F32"'
    assert needle in header, header[:200]
    path.write_bytes(blob[:8] + header.replace(needle, needle.replace(b"F32", b"I32"), 1) + blob[8 + n :])
    return key


def _st_shape(path: Path) -> None:
    """A safetensors header claiming a 100,000 x 100,000 tensor (40 GB) in a file of a few KB."""
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    key = next(k for k in sorted(header) if k != "__metadata__")
    header[key]["shape"] = [100_000, 100_000]
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + blob[8 + n :])


CKPT = "checkpoints/scratch"


def _ckpt_meta(change: Callable[[dict[str, Any]], Any], *, rehash: bool = True) -> Callable[[Path], None]:
    """Edit the stopped run's checkpoint JSON; ``rehash``: also update latest.json's checksum (a
    deliberate edit), so what is tested is the schema, not only the checksum."""

    def tamper(run: Path) -> None:
        meta_path = run / CKPT / "epoch-0001.json"
        meta = _json(meta_path)
        change(meta)
        _put(meta_path, meta)
        if rehash:
            pointer = _json(run / CKPT / "latest.json")
            pointer["meta_sha256"] = hashlib.sha256(meta_path.read_bytes()).hexdigest()
            _put(run / CKPT / "latest.json", pointer)

    return tamper


def _ckpt_pointer(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    return _edit(f"{CKPT}/latest.json", change)


def _format_1(pointer: dict[str, Any]) -> None:
    """latest.json as kdlab wrote it before checkpoints carried the JSON's checksum."""
    pointer["format"] = 1
    del pointer["meta_sha256"]


def _ckpt_tensor_dtype(run: Path) -> None:
    """A consistent edit of the checkpoint tensors' dtype: both checksums updated to match."""
    tensors = run / CKPT / "epoch-0001.safetensors"
    _st_dtype(tensors, "model.")
    digest = hashlib.sha256(tensors.read_bytes()).hexdigest()
    _ckpt_meta(lambda m: m.update(tensors_sha256=digest))(run)


def _ckpt_truncate(run: Path) -> None:
    tensors = run / CKPT / "epoch-0001.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-100])


def _seed_checkpoint_edited(run: Path) -> None:
    """A comparison's seed folder holding the stopped run's checkpoint, its JSON edited by hand."""
    shutil.copytree(BASES["stopped"] / "checkpoints", run / "seed-0" / "checkpoints")
    _ckpt_meta(lambda m: m.update(best_accuracy=1.0), rehash=False)(run / "seed-0")


def _deep(levels: int) -> str:
    return '{"arms": ' + "[" * levels + "]" * levels + "}"


# --------------------------------------------------------------------------------------------
# The cases


@dataclass(frozen=True)
class Case:
    base: str  # which run folder is copied
    tamper: Callable[[Path], None]
    command: Callable[[Path], list[str]]
    match: str  # regex the one error line must match
    writes: bool = False  # the command may write into the folder before it finds the damage (see below)


def show(run: Path) -> list[str]:
    return ["show", str(run)]


def report(run: Path) -> list[str]:
    return ["report", str(run)]


def predict_image(run: Path) -> list[str]:
    return ["predict", str(run), "--arm", "teacher", str(run / "no-such.png")]


def predict_text(run: Path) -> list[str]:
    return ["predict", str(run), "--arm", "teacher", "a wonderful film"]


def export(run: Path) -> list[str]:
    return ["export", str(run), "--arm", "teacher"]


def resume(run: Path) -> list[str]:
    return ["run", "--resume", str(run), "-q"]


def compare_resume(run: Path) -> list[str]:
    return ["compare", "digits", *_sets(SETS), "--methods", "kd", "--seeds", "1", "--resume", str(run), "-q"]


def teacher_checkpoint(run: Path) -> list[str]:
    ckpt = f"teacher.checkpoint={run / 'teacher.safetensors'}"
    return ["run", "digits", *_sets(SETS), "--set", ckpt, "-q", "--out", str(run / "new-runs")]


R = r"results\.json: "
CASES: dict[str, Case] = {
    # results.json ---------------------------------------------------------------------------
    "results not JSON": Case("done", _write("results.json", '{"arms": {'), show, R + r"unreadable \(not valid JSON"),
    "results a list": Case("done", _write("results.json", "[1, 2]"), show, R + r"not a kdlab results file .*a list"),
    "results nested 50,000 levels": Case(
        "done", _write("results.json", _deep(50_000)), report, R + r"unreadable \(JSON nested deeper than 32 levels"
    ),
    "results of 3 GB (sparse)": Case(
        "done", _sparse("results.json", 3 * 2**30), show, R + r"is 3,072 MiB; a kdlab record is at most 64 MiB"
    ),
    "results not UTF-8": Case(
        "done",
        _write("results.json", b'{"name": "\xff"}'),
        show,
        R + r"unreadable \(not UTF-8 text: byte 0xff at offset 10\)",
    ),
    "input_shape 10^15 elements": Case(
        "done",
        _results("data.input_shape", [100_000, 100_000, 100_000]),
        predict_image,
        R + r"data\.input_shape: .*2048",
    ),
    "input_shape of strings": Case(
        "done", _results("data.input_shape", ["1", "8", "8"]), export, R + r"data\.input_shape\.0: .*valid integer"
    ),
    "one class": Case("done", _results("data.classes", ["0"]), predict_image, R + r"data\.classes: .*at least 2"),
    "arms missing": Case("done", _edit("results.json", lambda r: r.pop("arms")), show, R + r"arms: Field required"),
    "arms a list": Case("done", _results("arms", ["teacher"]), report, R + r"arms: Input should be a valid dict"),
    "accuracy not a number": Case(
        "done",
        _results("arms.teacher.test_accuracy", "abc"),
        show,
        R + r"arms\.teacher\.test_accuracy: Input should be a valid number \(got 'abc'\); the run folder is damaged",
    ),
    "accuracy NaN": Case(
        "done",
        _results("arms.scratch.test_accuracy", float("nan")),
        report,
        R + r"arms\.scratch\.test_accuracy: .*finite",
    ),
    "accuracy 1.5": Case(
        "done",
        _results("arms.distilled.test_accuracy", 1.5),
        show,
        R + r"arms\.distilled\.test_accuracy: .*less than or equal to 1 \(got 1\.5\)",
    ),
    "an arm a string": Case("done", _results("arms.scratch", "oops"), report, R + r"arms\.scratch: .*valid dict"),
    "params of 400 digits": Case("done", _results("arms.teacher.params", 10**400), show, R + r"arms\.teacher\.params"),
    "an integer of 5,000 digits": Case(
        "done",
        _write("results.json", '{"seed": ' + "9" * 5000 + "}"),
        show,
        R + r"unreadable \(an integer of thousands of digits\)",
    ),
    "confusion matrix 3 x 3 for 10 classes": Case(
        "done",
        _results("arms.teacher.confusion_matrix", [[1, 0, 0]] * 3),
        report,
        R + r"arms\.teacher\.confusion_matrix: must be 10 x 10",
    ),
    "seed a string": Case("done", _results("seed", "0"), report, R + r"seed: Input should be a valid integer"),
    "weights outside the folder": Case(
        "done",
        _results("arms.teacher.weights", "../../../../etc/passwd"),
        predict_image,
        R + r"arm 'teacher' names weights outside the run folder",
    ),
    # other records of a finished run --------------------------------------------------------
    "history value not a number": Case(
        "done",
        lambda run: (run / "history.csv").write_text(
            (run / "history.csv").read_text().replace("\nteacher,1,", "\nteacher,one,", 1)
        ),
        report,
        r"history\.csv: line 2: epoch: Input should be a valid integer",
    ),
    "history field of 1 MB": Case(
        "done",
        lambda run: (run / "history.csv").write_text("arm,epoch\nteacher," + "9" * 2**20 + "\n"),
        report,
        r"history\.csv: unreadable \(field larger than field limit",
    ),
    "env.json a list": Case("done", _write("env.json", "[]"), report, r"env\.json: not an environment record"),
    "env.json resumes of numbers": Case(
        "stopped", _edit("env.json", lambda e: e.update(resumes=[1])), resume, r"env\.json: resumes\.0: "
    ),
    "config value tampered": Case(
        "done",
        lambda run: (run / "config.resolved.yaml").write_text(
            (run / "config.resolved.yaml").read_text().replace("lr: 0.001", "lr: fast")
        ),
        predict_image,
        r"config\.resolved\.yaml: train\.lr: .*\(got 'fast'\)",
    ),
    "config a list": Case(
        "done",
        _write("config.resolved.yaml", "- 1\n- 2\n"),
        export,
        r"config\.resolved\.yaml: not a mapping of config keys",
    ),
    "config unknown key": Case(
        "stopped",
        lambda run: (run / "config.resolved.yaml").write_text((run / "config.resolved.yaml").read_text() + "evil: 1\n"),
        resume,
        r"config\.resolved\.yaml: evil: unknown key",
    ),
    # vocab.json ---------------------------------------------------------------------------
    "vocab max_len 10^12": Case(
        "text", _edit("vocab.json", lambda v: v.update(max_len=10**12)), predict_text, r"vocab\.json: max_len: .*100000"
    ),
    "vocab tokens not strings": Case(
        "text",
        _edit("vocab.json", lambda v: v.update(tokens=["<pad>", "<oov>", 3, 4])),
        predict_text,
        r"vocab\.json: tokens\.2: Input should be a valid string",
    ),
    "vocab max_len differs from the input shape": Case(
        "text",
        _edit("vocab.json", lambda v: v.update(max_len=30)),
        predict_text,
        r"vocab\.json: max_len: 30 tokens, but results\.json records the input shape \[24\]",
    ),
    "vocab a string": Case(
        "text", _write("vocab.json", '"words"'), predict_text, r"vocab\.json: not a kdlab vocabulary"
    ),
    # weights --------------------------------------------------------------------------------
    "weights dtype F32 edited to I32 (predict)": Case(
        "done",
        lambda run: _st_dtype(run / "teacher.safetensors"),
        predict_image,
        r"teacher\.safetensors: net\.\S+ is stored as I32 but the teacher 'mlp-teacher' model's is F32",
    ),
    "weights dtype F32 edited to I32 (export)": Case(
        "done",
        lambda run: _st_dtype(run / "teacher.safetensors"),
        export,
        r"teacher\.safetensors: net\.\S+ is stored as I32 but the teacher 'mlp-teacher' model's is F32",
    ),
    "weights dtype F32 edited to I32 (teacher.checkpoint)": Case(
        "done",
        lambda run: _st_dtype(run / "teacher.safetensors"),
        teacher_checkpoint,
        r"teacher\.safetensors: net\.\S+ is stored as I32 but the teacher 'mlp-teacher' model's is F32",
    ),
    "weights header claims a 40 GB tensor": Case(
        "done",
        lambda run: _st_shape(run / "teacher.safetensors"),
        predict_image,
        r"teacher\.safetensors: not a readable safetensors file",
    ),
    # checkpoints (run --resume of the stopped run) ------------------------------------------
    "checkpoint JSON hand-edited": Case(
        "stopped",
        _ckpt_meta(lambda m: _set(m, "optimizer.param_groups.0.lr", "x"), rehash=False),
        resume,
        r"epoch-0001\.json: does not match the sha256 in latest\.json .*delete \S+checkpoints/scratch to restart",
    ),
    "checkpoint without rng": Case(
        "stopped", _ckpt_meta(lambda m: m.pop("rng")), resume, r"epoch-0001\.json: rng: Field required; damaged"
    ),
    "checkpoint lr 'x'": Case(
        "stopped",
        _ckpt_meta(lambda m: _set(m, "optimizer.param_groups.0.lr", "x")),
        resume,
        r"epoch-0001\.json: optimizer\.param_groups\.0\.lr: Input should be a valid number \(got 'x'\)",
    ),
    "checkpoint epoch -1": Case(
        "stopped",
        _ckpt_meta(lambda m: m.update(epoch=-1)),
        resume,
        r"epoch-0001\.json: epoch: .*greater than or equal to 0",
    ),
    "checkpoint numpy state cut short": Case(
        "stopped",
        _ckpt_meta(lambda m: _set(m, "rng.numpy.1", [1, 2, 3])),
        resume,
        r"epoch-0001\.json: rng\.numpy\.1: .*at least 624",
    ),
    "old checkpoint (no checksum) lr 'x'": Case(
        "stopped",
        lambda run: (
            _ckpt_meta(lambda m: _set(m, "optimizer.param_groups.0.lr", "x"), rehash=False)(run),
            _ckpt_pointer(_format_1)(run),
        ),
        resume,
        r"epoch-0001\.json: optimizer\.param_groups\.0\.lr: Input should be a valid number",
    ),
    "latest.json names a missing pair": Case(
        "stopped",
        _ckpt_pointer(lambda p: p.update(epoch=2, tensors="epoch-0002.safetensors", meta="epoch-0002.json")),
        resume,
        r"epoch-0002\.json: no such file; damaged checkpoint",
    ),
    "latest.json names a file outside": Case(
        "stopped",
        _ckpt_pointer(lambda p: p.update(meta="../../results.json")),
        resume,
        r"latest\.json: meta: must name epoch-0001\.json in this folder",
    ),
    "latest.json a list": Case(
        "stopped", _write(f"{CKPT}/latest.json", "[]"), resume, r"latest\.json: not a kdlab record .*a list"
    ),
    # Found only once the tensors are read, after resume has started writing: results.json
    # records the failure, the finished teacher stays on record.
    "checkpoint tensor dtype edited (checksums updated)": Case(
        "stopped",
        _ckpt_tensor_dtype,
        resume,
        r"epoch-0001\.safetensors: model\.\S+: I32 \[\d+(, \d+)*\], the scratch model's is F32",
        writes=True,
    ),
    "checkpoint tensors of 3 GB (sparse)": Case(
        "stopped",
        lambda run: os.truncate(run / CKPT / "epoch-0001.safetensors", 3 * 2**30),
        resume,
        r"epoch-0001\.safetensors: is 3,072 MiB; a checkpoint of this scratch model is at most \d+ MiB",
        writes=True,
    ),
    "checkpoint tensors truncated": Case(
        "stopped", _ckpt_truncate, resume, r"epoch-0001\.safetensors: does not match epoch-0001\.json", writes=True
    ),
    # comparison.json --------------------------------------------------------------------------
    "comparison seeds not numbers": Case(
        "comparison",
        _edit("comparison.json", lambda c: c.update(seeds=["a"])),
        compare_resume,
        r"comparison\.json: seeds\.0: Input should be a valid integer",
    ),
    "comparison method settings invalid": Case(
        "comparison",
        _edit("comparison.json", lambda c: c.update(methods={"kd": {"temperature": "hot"}})),
        compare_resume,
        r"comparison\.json: methods\.kd\.temperature: ",
    ),
    "comparison arms a list": Case(
        "comparison",
        _edit("comparison.json", lambda c: c.update(arms=[])),
        report,
        r"comparison\.json: arms: Input should be a valid dict",
    ),
    "comparison resumed with a seed folder that lies": Case(
        "comparison",
        lambda run: _results("arms.scratch.test_loss", "low")(run / "seed-0"),
        compare_resume,
        r"seed-0/results\.json: arms\.scratch\.test_loss: Input should be a valid number \(got 'low'\)",
    ),
    "comparison resumed with a hand-edited checkpoint": Case(
        "comparison",
        _seed_checkpoint_edited,
        compare_resume,
        r"seed-0/checkpoints/scratch/epoch-0001\.json: does not match the sha256 in latest\.json",
    ),
    "comparison nested 50,000 levels": Case(
        "comparison", _write("comparison.json", _deep(50_000)), report, r"comparison\.json: unreadable \(JSON nested"
    ),
    "comparison seed folder lies": Case(
        "comparison",
        lambda run: _results("arms.teacher.test_accuracy", "abc")(run / "seed-0"),
        report,
        r"seed-0/results\.json: arms\.teacher\.test_accuracy: Input should be a valid number",
    ),
}


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file of the folder -> its sha256 (its size, for a file too large to hash in a test)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".lock":  # .lock: the pid of the last process that held the folder
            size = p.stat().st_size
            out[str(p.relative_to(folder))] = str(size) if size > 2**26 else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_a_lying_run_folder_is_one_line_and_nothing_is_written(
    name: str, bases: dict[str, Path], tmp_path: Path
) -> None:
    case = CASES[name]
    run = tmp_path / "run"
    shutil.copytree(bases[case.base], run)
    finished = _json(bases[case.base] / "results.json")["arms"] if case.base != "comparison" else None
    case.tamper(run)
    before = _snapshot(run)
    res = run_bounded(case.command(run), mem_mb=MEM_MB, timeout=TIMEOUT)
    assert_clean_error(res, match=case.match)
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], "a temporary file was left"
    if case.writes:
        results = _json(run / "results.json")
        assert results["status"] == "failed" and results["arms"] == finished, "the finished arms were lost"
    else:
        assert _snapshot(run) == before, "the command wrote into the folder it refused"


def test_untampered_folders_are_read(bases: dict[str, Path], tmp_path: Path) -> None:
    """The same readers accept the folders as written (the corpus tests the records, not the readers' luck)."""
    from kdlab.train.checkpoint import ArmCheckpoint

    res = run_bounded(show(bases["done"]), mem_mb=MEM_MB, timeout=TIMEOUT)
    assert res.code == 0 and "distilled" in res.out, res.err
    res = run_bounded(predict_text(bases["text"]), mem_mb=MEM_MB, timeout=TIMEOUT)
    assert res.code == 0 and ("pos" in res.out or "neg" in res.out), res.err
    assert ArmCheckpoint(bases["stopped"] / CKPT, "scratch").verify().epoch == 1
    pointer = _json(bases["stopped"] / CKPT / "latest.json")
    assert pointer["format"] == 2 and len(pointer["meta_sha256"]) == 64
