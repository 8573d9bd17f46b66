"""Hostile corpus: configs and settings. Alias bombs, deep nesting, huge or binary files, keys
YAML reads as numbers, non-finite and absurd numbers, oversized names: one ``error:`` line naming
the key or the file, exit 2, in bounded time and memory, and no run folder left behind."""

from __future__ import annotations

import json
import resource
from collections.abc import Callable
from pathlib import Path

import pytest
from bounded import assert_clean_error, assert_nothing_written, run_bounded
from PIL import Image

# imported here once, so that each forked case starts in milliseconds
import kdlab.cli
import kdlab.lab.run  # noqa: F401
from kdlab.config.load import MAX_NODES, load_experiment, parse_yaml, show_value
from kdlab.data import memory
from kdlab.data.splits import stratified_split
from kdlab.errors import ConfigError, DataError

MEM_MB = 1024
TIMEOUT = 30.0
TINY = ["--set", "device=cpu", "--set", "teacher.model=mlp-teacher", "--set", "teacher.epochs=1"]
TINY += ["--set", "student.epochs=1", "--set", "data.train_limit=100", "-q"]


def _bomb(levels: int = 9, inline: bool = False) -> str:
    """A "billion laughs": 9 ** levels strings from a few hundred bytes."""
    rows = ['&l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    rows += [f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    if inline:
        return "[" + ", ".join(rows) + f", *l{levels - 1}]"
    return "".join(f"k{i}: {row}\n" for i, row in enumerate(rows)) + f"name: *l{levels - 1}\n"


# Each case builds its input under tmp and returns (arguments after `kdlab`, regex the line must match).
Case = Callable[[Path], tuple[list[str], str]]


def _file(content: str | bytes, match: str, name: str = "exp.yaml") -> Case:
    def build(tmp: Path) -> tuple[list[str], str]:
        path = tmp / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return ["run", str(path), *TINY, "--out", str(tmp / "runs")], match

    return build


def _set(*items: str, match: str) -> Case:
    def build(tmp: Path) -> tuple[list[str], str]:
        sets = [a for item in items for a in ("--set", item)]
        return ["run", "digits", *TINY, *sets, "--out", str(tmp / "runs")], match

    return build


def _target(target: str, match: str) -> Case:
    return lambda tmp: (["run", target, *TINY, "--out", str(tmp / "runs")], match)


def _image_folder(tmp: Path) -> tuple[list[str], str]:
    for cls in ("a", "b"):
        for i in range(25):
            (tmp / "imgs" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (i, i, i)).save(tmp / "imgs" / cls / f"{i}.png")
    sets = [f"data.path={tmp / 'imgs'}", "data.name=image-folder", f"data.cache_dir={tmp / 'cache'}"]
    # 50 images of 3 × 2048² px: 629 MB decoded, twice that with the split copies > the 1 GiB limit.
    sets += ["data.image_size=2048"]
    return _set(*sets, match=r"^error: data\.image_size: 50 images of 3×2048×2048 px need 1\.3 GB")(tmp)


def _long_texts(tmp: Path) -> tuple[list[str], str]:
    rows = "".join(f"word{i % 7} other{i % 3},{'pos' if i % 2 else 'neg'}\n" for i in range(1500))
    (tmp / "t.csv").write_text("text,label\n" + rows)
    sets = ["data.name=text-csv", f"data.path={tmp / 't.csv'}", "data.max_len=100000"]
    sets += ["teacher.model=bag-teacher", "student.model=bag-student"]
    # 1,500 texts × 100,000 int64 ids = 1.2 GB > the 1 GiB limit.
    return _set(*sets, match=r"^error: data\.max_len: 1,500 texts of 100,000 int64 token ids need 1\.2 GB")(tmp)


CASES: dict[str, Case] = {
    # YAML reading bounds
    "alias bomb in a string field": _file(_bomb(), r"exp\.yaml: line \d+: holds more than 10,000 values .*alias bomb"),
    "alias bomb in a --set value": _set("name=" + _bomb(inline=True), match=r"--set name: .*alias bomb"),
    "recursive alias": _file("name: &a [*a]\n", r"exp\.yaml: line 1: .*recursive alias"),
    "50,000-deep flow nesting": _file(
        "name: " + "[" * 50_000 + "]" * 50_000, r"exp\.yaml: line 1: nested deeper than 50"
    ),
    "deep block nesting": _file(
        "".join(" " * i + f"k{i}:\n" for i in range(80)), r"exp\.yaml: line \d+: nested deeper"
    ),
    "--set name=[[[[ 50,000 deep": _set("name=" + "[" * 50_000 + "]" * 50_000, match=r"--set name: .*deeper than 50"),
    "file over 1 MiB": _file("# " + "x" * 2**20 + "\nname: big\n", r"exp\.yaml: is larger than 1 MiB"),
    "/dev/zero as the experiment": _target(
        "/dev/zero", r"/dev/zero: is a device, not a regular file; give an experiment"
    ),
    "binary file": _file(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 10, r"exp\.yaml: is a binary file"),
    "not UTF-8": _file("name: caf\xe9\n".encode("latin-1"), r"exp\.yaml: is not UTF-8 text \(byte 0xe9 at offset 9\)"),
    "integer of 5,000 digits": _file("seed: " + "9" * 5000 + "\n", r"exp\.yaml: an integer with thousands of digits"),
    "--set int of 5,000 digits": _set("seed=" + "9" * 5000, match=r"--set seed: an integer with thousands"),
    "a 50,000-char key": _file(
        "? " + "k" * 50_000 + "\n: 1\n", r"exp\.yaml \+ --set: k{39}…: unknown key \(known keys: name, seed"
    ),
    "a list of 5,000 long strings as name": _file(
        "name: [" + ", ".join(["y" * 200] * 5000) + "]\n", r"name: Input should be a valid string \(got \['yyy"
    ),
    "experiment is a folder": lambda tmp: (["run", str(tmp)], r"is a folder, not an experiment YAML file"),
    "10,000-char experiment name": _target("e" * 10_000, r"'e{59}…' is neither a preset nor a YAML file"),
    "preset name with ..": _target("../presets/digits", r"is neither a preset nor a YAML file"),
    # keys YAML does not read as names
    "integer key": _file("1: 2\n", r"exp\.yaml: key 1 at the top level: keys are names, YAML read this one as int"),
    "bool key in a section": _file("data:\n  yes: 1\n", r"key True under data: .*as bool; quote it: 'True'"),
    "null key": _file("~: 1\n", r"key None at the top level"),
    "list as a key": _file("? [a]\n: 1\n", r"exp\.yaml: line 1: not valid YAML \(.*unhashable key\)"),
    "--set a mapping with an int key": _set(
        "distill.feature_pairs={0: fc}", match=r"--set distill\.feature_pairs: key 0"
    ),
    # base:
    "base: a number": _file("base: 5\n", r"exp\.yaml: base: must be a preset name \(got 5\)"),
    "base: a path (itself)": _file(
        "base: ./exp.yaml\n", r"base: unknown preset '\./exp\.yaml' \(base takes a preset name"
    ),
    "base: a path out of the presets": _file("base: ../../x\n", r"base: unknown preset '\.\./\.\./x' \(base takes"),
    "base: a list": _file("base: [digits]\n", r"base: must be a preset name \(got \['digits'\]\)"),
    # --set shapes
    "compare --methods value 3,000 deep": lambda tmp: (
        ["compare", "digits", "--methods", "kd:temperature=" + "[" * 3000, "-q", "--out", str(tmp / "runs")],
        r"--methods kd:temperature: line 1: nested deeper than 50 levels",
    ),
    "compare --methods temperature inf": lambda tmp: (
        ["compare", "digits", "--methods", "kd:temperature=.inf", "-q", "--out", str(tmp / "runs")],
        r"distill\.temperature: Input should be a finite number",
    ),
    "a section given a scalar": _set("train=5", match=r"train: Input should be a valid dictionary"),
    "a scalar given a mapping": _set("seed={a: 1}", match=r"seed: Input should be a valid integer"),
    "a value used as a section": _set("train.lr.x=1", match=r"'lr' is a value, not a section"),
    "--set a..b=1": _set("a..b=1", match=r"--set 'a\.\.b=1': empty name in the key"),
    "--set .a=1": _set(".a=1", match=r"empty name in the key"),
    "--set =1": _set("=1", match=r"--set '=1': expected key=value"),
    "empty name": _set("name=", match=r"name: String should have at least 1 character"),
    "10,000-char name": _set("name=" + "n" * 10_000, match=r"name: String should have at most 100 characters"),
    "--set key of 100,000 chars": _set("k" * 100_000 + "=1", match=r"--set: k{39}…: unknown key \(known keys: name"),
    "NUL byte in data.path": _file('data:\n  path: "a\\0b"\n', r"data\.path: a path cannot contain a NUL byte"),
    # numbers: finite, in range, named
    "seed 2**32": _set("seed=4294967296", match=r"seed: Input should be less than or equal to 2147483647"),
    "negative seed": _set("seed=-1", match=r"seed: Input should be greater than or equal to 0"),
    "temperature inf": _set("distill.temperature=.inf", match=r"distill\.temperature: Input should be a finite number"),
    "temperature 1e-300": _set("distill.temperature=1.0e-300", match=r"distill\.temperature: .*greater than or equal"),
    "temperature 1e6": _set("distill.temperature=1000000", match=r"distill\.temperature: .*less than or equal to 100"),
    "temperature nan": _set("distill.temperature=.nan", match=r"distill\.temperature: Input should be a finite"),
    "dkd_beta inf": _set("distill.method=dkd", "distill.dkd_beta=.inf", match=r"distill\.dkd_beta: .*finite"),
    "dkd_alpha huge": _set("distill.dkd_alpha=1.0e+30", match=r"distill\.dkd_alpha: .*less than or equal to 10000"),
    "dist_gamma -inf": _set("distill.dist_gamma=-.inf", match=r"distill\.dist_gamma: .*finite"),
    "feature_weight huge": _set("distill.feature_weight=1.0e+9", match=r"distill\.feature_weight: .*less than"),
    "lr inf": _set("train.lr=.inf", match=r"train\.lr: Input should be a finite number"),
    "lr 100": _set("train.lr=100", match=r"train\.lr: Input should be less than or equal to 10"),
    "grad_clip nan": _set("train.grad_clip=.nan", match=r"train\.grad_clip: .*finite"),
    "max_memory_gb inf": _set("data.max_memory_gb=.inf", match=r"data\.max_memory_gb: .*finite"),
    "alpha nan": _set("distill.alpha=.nan", match=r"distill\.alpha: .*finite"),
    # sizes with upper bounds
    "image_size 100,000": _set("data.image_size=100000", match=r"data\.image_size: .*less than or equal to 2048"),
    "max_len 10**9": _set("data.max_len=1000000000", match=r"data\.max_len: .*less than or equal to 100000"),
    "vocab_size 10**12": _set("data.vocab_size=1000000000000", match=r"data\.vocab_size: .*less than or equal"),
    "batch_size 10**9": _set("train.batch_size=1000000000", match=r"train\.batch_size: .*less than or equal to 65536"),
    "eval_batch_size 10**9": _set("train.eval_batch_size=1000000000", match=r"train\.eval_batch_size: .*65536"),
    "teacher.epochs 10**9": _set("teacher.epochs=1000000000", match=r"teacher\.epochs: .*less than or equal to 10000"),
    "student.epochs 10**9": _set("student.epochs=1000000000", match=r"student\.epochs: .*less than or equal to 10000"),
    "warmup_epochs 10**9": _set("distill.warmup_epochs=1000000000", match=r"distill\.warmup_epochs: .*10000"),
    "train_limit 10**12": _set("data.train_limit=1000000000000", match=r"data\.train_limit: .*less than or equal"),
    "crop_padding 10**6": _set("train.augment.crop_padding=1000000", match=r"train\.augment\.crop_padding: .*256"),
    # splits and memory, refused before a run folder exists
    "test_fraction 0": _set(
        "data.test_fraction=0", match=r"^error: data\.test_fraction: the test split of digits is empty"
    ),
    "image-folder larger than memory": _image_folder,
    "texts larger than memory": _long_texts,
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_config_is_one_line_exit_2(name: str, tmp_path: Path) -> None:
    args, match = CASES[name](tmp_path)
    res = run_bounded(args, mem_mb=MEM_MB, timeout=TIMEOUT)
    assert_clean_error(res, match=match)
    assert res.seconds < 15, f"took {res.seconds:.1f} s"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert_nothing_written(tmp_path)


def test_empty_validation_split_and_a_path_like_name_are_a_run(tmp_path: Path) -> None:
    """val_fraction=0 is legal (no validation: select=best-val keeps the last epoch); a name with
    '/' and '..' is recorded as given, and the folder stays under --out with a sanitized name."""
    out = tmp_path / "runs"
    args = ["run", "digits", *TINY, "--set", "data.val_fraction=0", "--set", "name=../../x/..", "--out", str(out)]
    res = run_bounded(args, mem_mb=MEM_MB, timeout=60)
    assert res.code == 0, res.err[-2000:]
    (run_dir,) = list(out.iterdir())
    assert run_dir.name.endswith("-..-..-x-..") and "/" not in run_dir.name
    results = json.loads((run_dir / "results.json").read_text())
    assert results["name"] == "../../x/.." and results["data"]["val"] == 0
    assert [p for p in tmp_path.iterdir()] == [out]


# Unit tests of the bounds themselves


def test_alias_bomb_is_refused_while_parsing_in_bounded_memory() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match=f"more than {MAX_NODES:,} values once its aliases are expanded"):
        parse_yaml(_bomb(levels=12), "bomb.yaml")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kB


def test_shared_aliases_within_the_bound_still_load() -> None:
    raw = parse_yaml("a: &p {x: 1}\nb: *p\nc: {<<: *p, y: 2}\n", "ok.yaml")
    assert raw == {"a": {"x": 1}, "b": {"x": 1}, "c": {"x": 1, "y": 2}}


def test_shown_values_are_short_for_huge_and_self_referencing_values() -> None:
    loop: list[object] = []
    loop.append(loop)
    big = [["z" * 10_000] * 1000] * 1000  # shared, as an alias-expanded value is
    for value in (loop, big, "q" * 10**6, 7**2000):
        assert len(show_value(value)) <= 80


def test_valid_edge_values_load() -> None:
    cfg = load_experiment("digits", ["seed=2147483647", "distill.temperature=0.01", "train.lr=10", "name=" + "n" * 100])
    assert (cfg.seed, cfg.distill.temperature, cfg.train.lr, len(cfg.name)) == (2**31 - 1, 0.01, 10.0, 100)


def test_unparsable_set_value_stays_a_string() -> None:
    assert load_experiment("digits", ["name=[unclosed"]).name == "[unclosed"


def test_check_memory_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "available_bytes", lambda: 10**9)
    memory.check_memory(10**8, "data.image_size", "10 images")
    with pytest.raises(DataError, match=r"^data\.max_len: 5 texts need 2\.0 GB of memory, and 1\.0 GB is available"):
        memory.check_memory(2 * 10**9, "data.max_len", "5 texts")
    monkeypatch.setattr(memory, "available_bytes", lambda: None)
    memory.check_memory(10**15, "data.image_size", "unknown memory: not refused")


def test_available_memory_is_known_here() -> None:
    free = memory.available_bytes()
    assert free is not None and free > 0


def test_split_seeds_near_the_bound_are_valid_random_states() -> None:
    labels = [i % 3 for i in range(60)]
    parts = stratified_split(labels, (0.8, 0.1, 0.1), seed=2**32 - 1)  # seed + 1, seed + 2 wrap around
    assert sum(len(p) for p in parts) == 60


def test_a_fifo_as_the_experiment_is_refused_without_blocking(tmp_path) -> None:
    """A named pipe nobody writes to would block a plain open() forever: refused, never read (in a
    bounded child, so a regression fails on the timeout instead of hanging the suite)."""
    import os

    fifo = tmp_path / "exp.yaml"
    os.mkfifo(fifo)
    res = run_bounded(["run", str(fifo), "--out", str(tmp_path / "runs")], mem_mb=MEM_MB, timeout=60)
    assert_clean_error(res, match=r"exp\.yaml: is a FIFO \(named pipe\), not a regular file")
    assert_nothing_written(tmp_path / "runs")
