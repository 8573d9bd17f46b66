"""benchmarks.text_corpora on a tiny fortune-format folder: what is read, skipped, cleaned, deduplicated,
balanced, and that kdlab's text-csv loader reads what it writes."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import pytest

from kdlab.config import load_experiment
from kdlab.data.bundle import build_data

# benchmarks/ is not an installed package: load the script from the checkout.
_SPEC = importlib.util.spec_from_file_location(
    "benchmarks.text_corpora", Path(__file__).resolve().parents[2] / "benchmarks" / "text_corpora.py"
)
assert _SPEC is not None and _SPEC.loader is not None
tc = importlib.util.module_from_spec(_SPEC)
sys.modules.setdefault(_SPEC.name, tc)
_SPEC.loader.exec_module(tc)


def write_fortunes(path: Path, records: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n%\n".join(records) + "\n%\n", encoding="utf-8")


def numbered(word: str, n: int) -> list[str]:
    return [f"{word} saying number {i} goes here" for i in range(n)]


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "fortunes"
    shared = "the same words in two files"
    write_fortunes(
        r / "computers",
        [
            *numbered("computer", 12),
            "computer saying number 0 goes here",  # duplicate within the file: kept once
            # underline overstrike (_\bX), ANSI escapes, runs of whitespace
            "  An  _\x08u_\x08n_\x08d_\x08e_\x08r_\x08l_\x08i_\x08n_\x08e_\x08d\n\tword  \x1b[1min bold\x1b[0m  ",
            "two words",  # fewer than MIN_WORDS
            "x " * 600,  # longer than MAX_CHARS
            "",
            shared,
        ],
    )
    write_fortunes(r / "politics", [*numbered("politics", 10), shared])  # shared text: two labels, dropped
    (r / "computers.dat").write_bytes(b"\x00\x01\x02 index")
    (r / "computers.u8").symlink_to("computers")
    write_fortunes(r / "politics-o", numbered("rot13 offensive", 5))
    write_fortunes(r / "off" / "politics", numbered("offensive folder", 5))
    write_fortunes(r / "brasil", numbered("brasileiro", 9))
    write_fortunes(r / "de" / "witze", numbered("deutsch", 7))
    write_fortunes(r / "de" / "sub" / "sprueche", numbered("deutsch tief", 4))
    (r / "de" / "witze.dat").write_bytes(b"\xff\xfe binary")
    write_fortunes(r / "de" / "off" / "witze", numbered("deutsch offensiv", 5))
    write_fortunes(r / "it" / "adams", numbered("italiano", 20))
    (r / "adams").symlink_to("it/adams")  # top-level links into it/ are not English
    return r


LANGS = {"en": (".",), "de": ("de",), "it": ("it",), "pt": ("brasil",)}


def test_topics_skip_clean_and_dedupe(root: Path) -> None:
    rows = tc.topic_rows(root, topics=("computers", "politics"), per_class=None, min_count=2)
    texts = {t for t, _ in rows}
    labels = [lab for _, lab in rows]
    assert labels.count("computers") == 13 and labels.count("politics") == 10
    assert "An underlined word in bold" in texts  # \b-overstrike and escapes gone, whitespace collapsed
    assert "the same words in two files" not in texts
    assert not any("offensive" in t or t == "two words" or t.startswith("x x") for t in texts)
    assert len(texts) == len(rows)


def test_topics_cap_and_too_few(root: Path) -> None:
    rows = tc.topic_rows(root, topics=("computers", "politics"), per_class=5, min_count=2)
    assert sorted(lab for _, lab in rows) == ["computers"] * 5 + ["politics"] * 5
    with pytest.raises(tc.MissingFortunes, match="fewer than 11 usable records: politics"):
        tc.topic_rows(root, topics=("computers", "politics"), per_class=None, min_count=11)
    with pytest.raises(tc.MissingFortunes, match="category files science are missing; install them: apt-get"):
        tc.topic_rows(root, topics=("computers", "science"))


def test_languages_balanced_and_files_skipped(root: Path) -> None:
    rows = tc.language_rows(root, LANGS, per_class=None, seed=3)
    by = {lang: [t for t, lab in rows if lab == lang] for lang in LANGS}
    assert {k: len(v) for k, v in by.items()} == {"en": 9, "de": 9, "it": 9, "pt": 9}  # smallest: pt
    assert not any("italiano" in t for t in by["en"])  # the top-level link to it/adams is skipped
    assert not any("brasileiro" in t for t in by["en"])  # brasil is Portuguese, not English
    assert not any("offensiv" in t for t in by["de"]) and sum("tief" in t for t in by["de"]) <= 4
    assert rows == tc.language_rows(root, LANGS, per_class=None, seed=3)  # deterministic
    assert rows != tc.language_rows(root, LANGS, per_class=None, seed=4)
    assert len(tc.language_rows(root, LANGS, per_class=4)) == 16
    with pytest.raises(tc.MissingFortunes, match=r"ru \(.*ru\); install them: apt-get install -y fortunes"):
        tc.language_rows(root, {**LANGS, "ru": ("ru",)})


def test_written_csv_loads_with_text_csv(root: Path, tmp_path: Path) -> None:
    rows = tc.language_rows(root, LANGS, per_class=None)
    path = tc.write_csv(tmp_path / "out" / "langs.csv", rows)
    with path.open(newline="", encoding="utf-8") as f:
        read = list(csv.reader(f))
    assert read[0] == ["text", "label"] and [tuple(r) for r in read[1:]] == rows
    cfg = load_experiment("text-csv", [f"data.path={path}"])
    data = build_data(cfg.data, 0)
    assert sorted(data.classes) == ["de", "en", "it", "pt"]
    assert len(data.train) + len(data.val) + len(data.test) == 36
    assert set(data.test.source.texts) <= {t for t, _ in rows}  # type: ignore[union-attr]


def test_main_missing_root_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert tc.main([str(tmp_path / "out"), "--root", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not exist" in err and "apt-get install -y fortunes fortunes-de" in err
    assert not (tmp_path / "out").exists()
