"""`kdlab models`: every name with its kind, a description and its parameter count at the default shape."""

from __future__ import annotations

import pytest
from clihelp import run_cli
from rich.console import Console
from torch import nn

from kdlab.models import MODELS, count_params, create_model, list_models
from kdlab.models.registry import DEFAULT_SHAPES, describe_models, print_models


def test_every_builtin_model_has_a_kind_a_description_and_a_count() -> None:
    rows = {r["name"]: r for r in describe_models()}
    assert sorted(rows) == list_models()
    for name, row in rows.items():
        assert row["kind"] in DEFAULT_SHAPES and row["description"], name
        shape = DEFAULT_SHAPES[str(row["kind"])]
        model = create_model(
            name, num_classes=shape.num_classes, input_shape=shape.input_shape, vocab_size=shape.vocab_size
        )
        assert row["params"] == count_params(model), name
    # the counts docs/models.md gives for these shapes
    assert rows["lab-cnn-teacher"]["params"] == 200_778 and rows["lab-cnn-student"]["params"] == 54_410
    assert rows["lab-rnn-teacher"]["params"] == 2_857_986 and rows["lab-rnn-student"]["params"] == 1_324_034
    assert rows["mlp-student"]["kind"] == "image" and rows["bag-student"]["kind"] == "text"


def test_listing_fits_80_columns_and_says_which_shape() -> None:
    console = Console(width=80, record=True)
    print_models(console)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines) and not any("…" in line for line in lines)
    text = " ".join(" ".join(lines).split())
    assert "1×28×28, 10 classes" in text and "vocabulary 20,000" in text
    row = next(line for line in lines if line.startswith("lab-cnn-teacher "))
    assert "image" in row and "200,778" in row and "teacher" in row.split("200,778")[1]
    assert "models are given by these names" in text


def test_a_model_registered_without_metadata_is_still_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    def custom(*, num_classes: int, **_: object) -> nn.Module:
        return nn.Linear(4, num_classes)

    monkeypatch.setitem(MODELS._items, "custom-net", custom)
    row = next(r for r in describe_models() if r["name"] == "custom-net")
    assert row["params"] is None and row["description"] == ""
    console = Console(width=80, record=True)
    print_models(console)
    assert any(line.startswith("custom-net ") and "—" in line for line in console.export_text().splitlines())


def test_cli_models_command(capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cli(["models"], capsys)
    assert res.code == 0
    row = next(line for line in res.out.splitlines() if line.startswith("lab-rnn-teacher "))
    assert "text" in row and "2,857,986" in row
