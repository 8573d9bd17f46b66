"""Tokenizer, vocabulary and the text datasets (text-csv files and folders, aclImdb layout)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from text_corpus import reviews, write_aclimdb, write_table

from kdlab.config.schema import DataConfig
from kdlab.data import build_data
from kdlab.data.text import Vocab, load_vocab, save_vocab, tokenize
from kdlab.errors import DataError


def test_tokenize_lowercases_strips_punctuation_and_line_breaks() -> None:
    assert tokenize("Great movie!<br /><br />Don't MISS it...") == ["great", "movie", "dont", "miss", "it"]
    assert tokenize("one<br/>two<BR>three\tfour\n five") == ["one", "two", "three", "four", "five"]
    assert tokenize("Café, naïve — 10/10 (really_good)") == ["café", "naïve", "1010", "reallygood"]
    assert tokenize("  ?!  ") == []


def test_vocab_ranks_by_count_then_word_and_caps_size() -> None:
    # counts: b 3, a 2, c 2, d 1, e 1 -> ties broken alphabetically
    v = Vocab.build(["b a c", "b a c d", "b e"], vocab_size=6, max_len=4)
    assert v.tokens == ("<pad>", "<oov>", "b", "a", "c", "d")
    assert len(v) == 6  # vocab_size counts padding and unknown, like Keras' num_words
    assert v.ids("e b zzz A") == [1, 2, 1, 3]
    # encoding while building (each text tokenized once) == encoding with the finished vocabulary
    texts = ["b a c", "b a c d e e", "", "Z b"]
    v2, x = Vocab.fit_encode(texts, vocab_size=5, max_len=4)
    assert v2.tokens == ("<pad>", "<oov>", "b", "a", "c") and torch.equal(x, v2.encode(texts))
    assert x.tolist() == [[2, 3, 4, 0], [2, 3, 4, 1], [0, 0, 0, 0], [1, 2, 0, 0]]


def test_encode_pads_at_end_and_keeps_first_max_len_tokens() -> None:
    v = Vocab.build(["w1 w2 w3 w4 w5 w6"], vocab_size=100, max_len=4)
    x = v.encode(["w1 w2", "w1 w2 w3 w4 w5 w6", "", "w6 unknown"])
    assert x.dtype == torch.int64 and x.shape == (4, 4)
    assert x.tolist() == [[2, 3, 0, 0], [2, 3, 4, 5], [0, 0, 0, 0], [7, 1, 0, 0]]


def test_vocab_json_round_trip(tmp_path: Path) -> None:
    v = Vocab.build(["zeta alpha alpha"], vocab_size=10, max_len=7)
    save_vocab(tmp_path, v)
    again = load_vocab(tmp_path / "vocab.json")
    assert again == v and torch.equal(again.encode(["alpha zeta x"]), v.encode(["alpha zeta x"]))
    (tmp_path / "vocab.json").write_text('{"tokens": ["a", "b"], "max_len": 3}')
    with pytest.raises(DataError, match="must start with '<pad>'"):
        load_vocab(tmp_path / "vocab.json")


def test_vocabulary_comes_from_the_training_split_only(tmp_path: Path) -> None:
    # every training-file row carries its own unique word; val is split off train after reading
    rows = [(f"{text} uniq{i}", label) for i, (text, label) in enumerate(reviews(60))]
    write_table(tmp_path / "train.csv", rows)
    write_table(tmp_path / "test.csv", [("neverseenword great", "pos"), ("neverseenword awful", "neg")])
    d = build_data(DataConfig(name="text-csv", path=tmp_path, max_len=32, val_fraction=0.2), seed=0)
    vocab = d.meta["vocab"]
    assert (len(d.train), len(d.val), len(d.test)) == (48, 12, 2)
    assert sum(t.startswith("uniq") for t in vocab.tokens) == 48  # the training rows' words only
    assert "neverseenword" not in vocab.tokens and d.test.x[:, 0].tolist() == [1, 1]
    assert not (d.train.x == 1).any()  # every training word is in the vocabulary
    assert (d.val.x == 1).any(dim=1).all()  # each validation row's unique word is unknown
    assert d.classes == ["neg", "pos"] and d.input_shape == (32,) and d.meta["vocab_size"] == len(vocab)


def test_csv_tsv_jsonl_give_the_same_bundle(tmp_path: Path) -> None:
    rows = reviews(100)
    bundles = []
    for suffix in (".csv", ".tsv", ".jsonl"):
        path = write_table(tmp_path / f"data{suffix}", rows, text="review", label="sentiment")
        cfg = DataConfig(name="text-csv", path=path, text_column="review", label_column="sentiment", max_len=12)
        bundles.append(build_data(cfg, seed=3))
    a = bundles[0]
    assert (len(a.train), len(a.val), len(a.test)) == (80, 10, 10)
    assert sorted(a.test.y.tolist()) == [0] * 5 + [1] * 5  # stratified
    for b in bundles[1:]:
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
        assert a.meta["vocab"] == b.meta["vocab"]


def test_folder_with_val_file_and_skipped_rows(tmp_path: Path) -> None:
    write_table(tmp_path / "train.jsonl", [*reviews(40), ("", "pos"), ("text without label", "")])
    write_table(tmp_path / "val.jsonl", reviews(10, seed=1))
    write_table(tmp_path / "test.jsonl", reviews(10, seed=2))
    d = build_data(DataConfig(name="text-csv", path=tmp_path), seed=0)
    assert (len(d.train), len(d.val), len(d.test)) == (40, 10, 10)
    assert len(d.meta["skipped_files"]) == 2 and "(empty text)" in d.meta["skipped_files"][0]
    assert d.summary()["skipped_count"] == 2


def test_numeric_labels_sort_numerically(tmp_path: Path) -> None:
    rows = [(text, {"neg": "2", "pos": "10"}[y]) for text, y in reviews(60)]
    d = build_data(DataConfig(name="text-csv", path=write_table(tmp_path / "d.csv", rows)), seed=0)
    assert d.classes == ["2", "10"]


def test_aclimdb_layout(tmp_path: Path) -> None:
    write_aclimdb(tmp_path, reviews(40), reviews(20, seed=5))
    (tmp_path / "aclImdb" / "test" / "neg" / "bad.txt").write_bytes(b"\xff\xfe broken")
    for path in (tmp_path, tmp_path / "aclImdb"):  # the download folder or aclImdb itself
        d = build_data(DataConfig(name="aclimdb", path=path, val_fraction=0.25, max_len=16), seed=0)
        assert (len(d.train), len(d.val), len(d.test)) == (30, 10, 20)  # train/unsup ignored
        assert d.classes == ["neg", "pos"] and d.test.y.sum().item() == 10
        assert d.meta["skipped_files"] == [str(tmp_path / "aclImdb" / "test" / "neg" / "bad.txt")]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: write_table(p / "d.csv", reviews(20), text="body"), "no text column 'text' .*columns: body, label"),
        (lambda p: (p / "d.csv").write_bytes(b"text,label\ncaf\xe9,pos\n"), r"not UTF-8 text \(line 2, byte 14"),
        (lambda p: (p / "d.csv").write_text("\n \n"), "the file is empty"),
        (lambda p: write_table(p / "d.csv", [(t, "pos") for t, _ in reviews(20)]), "1 class .'pos'."),
        (lambda p: write_table(p / "d.csv", [("", "pos"), (" ", "neg")]), "no rows with both"),
        (lambda p: (p / "d.jsonl").write_text('{"text": "a", "label": "x"}\n[1, 2]\n'), "d.jsonl:2: a JSON list"),
        (lambda p: (p / "d.txt").write_text("x"), "is not a .csv, .tsv, .jsonl file"),
    ],
)
def test_bad_text_files_are_one_line_data_errors(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    (path,) = list(tmp_path.iterdir())
    with pytest.raises(DataError, match=message) as info:
        build_data(DataConfig(name="text-csv", path=path), seed=0)
    assert "\n" not in str(info.value)


def test_aclimdb_missing_folder_says_where_to_download(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"aclImdb_v1\.tar\.gz"):
        build_data(DataConfig(name="aclimdb", path=tmp_path), seed=0)
    with pytest.raises(DataError, match=r"aclImdb_v1\.tar\.gz"):
        build_data(DataConfig(name="aclimdb"), seed=0)
