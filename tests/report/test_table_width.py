"""The run and comparison tables fit an 80-column terminal (no cut cell) and name each arm's selected epoch."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from kdlab.report.compare_table import print_comparison
from kdlab.report.table import print_results


def _arm(acc: float, params: int, selected: int | None, epochs: int, agree: float | None = None) -> dict[str, Any]:
    return {
        "test_accuracy": acc,
        "test_loss": 0.123456,
        "params": params,
        "size_bytes": params * 4 + 1234,
        "train_seconds": 1234.56,
        "ms_per_step": 12.345,
        "epochs": epochs,
        "selected_epoch": selected,
        "teacher_agreement": agree,
    }


RESULTS: dict[str, Any] = {
    "name": "fashion-mnist",
    "seed": 0,
    "status": "complete",
    "data": {"name": "fashion-mnist"},
    "arms": {
        "teacher": _arm(0.9391, 9_568_898, 14, 15),
        "scratch": _arm(0.8812, 200_738, 30, 30, agree=0.9012),
        "distilled": _arm(0.8935, 200_738, 27, 30, agree=0.9234),
    },
}


def _render(width: int, print_fn: Any, record: dict[str, Any]) -> list[str]:
    console = Console(width=width, record=True)
    print_fn(record, console)
    return console.export_text().splitlines()


def _row(lines: list[str], arm: str) -> str:
    return next(line for line in lines if line.strip(" │").startswith(arm + " "))


def test_run_table_fits_80_columns_and_names_the_selected_epoch() -> None:
    lines = _render(80, print_results, RESULTS)
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert not any("…" in line for line in lines)
    teacher, distilled = _row(lines, "teacher"), _row(lines, "distilled")
    assert "93.91%" in teacher and "14/15" in teacher and "9,568,898" in teacher
    assert "89.35%" in distilled and "27/30" in distilled and "+1.23" in distilled
    text = "\n".join(lines)
    assert "best-val" in text  # the caption explains why the kept epoch is not the last one
    # what did not fit is named, not silently cut
    assert "not shown at this width:" in " ".join(text.split()) and "size" in text.split("not shown")[1]


@pytest.mark.parametrize("width", [120, 160])
def test_run_table_keeps_the_wide_layout_at_120_columns(width: int) -> None:
    lines = _render(width, print_results, RESULTS)
    header = next(line for line in lines if "test acc" in line)
    for col in ("arm", "test acc", "loss", "params", "size", "train s", "ms/step", "agree", "Δ acc", "epoch"):
        assert col in header
    assert _row(lines, "scratch").startswith("│ scratch ")  # the bordered layout
    teacher = _row(lines, "teacher")
    assert "36.5 MB" in teacher and "1234.6" in teacher and "12.35" in teacher
    assert "not shown" not in "\n".join(lines)
    assert all(len(line) <= width for line in lines)


def test_loaded_teacher_without_epochs_shows_a_dash() -> None:
    results = {**RESULTS, "arms": {**RESULTS["arms"], "teacher": _arm(0.9391, 9_568_898, None, 0)}}
    teacher = _row(_render(80, print_results, results), "teacher")
    assert "—" in teacher and "0/0" not in teacher


def _stats(mean: float, diff: bool = True) -> dict[str, Any]:
    s: dict[str, Any] = {"n": 5, "mean": mean, "ci95_low": mean - 0.0122, "ci95_high": mean + 0.0122}
    if diff:
        s["diff_vs_scratch"] = {"mean": 0.0123, "ci95_low": -0.0123, "ci95_high": 0.0345, "p_value": 0.0312}
    return s


COMPARISON: dict[str, Any] = {
    "name": "fashion-mnist-methods",
    "data": {"name": "fashion-mnist"},
    "seeds": [0, 1, 2, 3, 4],
    "status": "complete",
    "arms": {
        "teacher": _stats(0.9391, diff=False),
        "scratch": _stats(0.8812, diff=False),
        "distilled": _stats(0.8935),
        "kd+at": _stats(0.8935),
    },
}


def test_comparison_table_fits_80_columns() -> None:
    lines = _render(80, print_comparison, COMPARISON)
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert not any("…" in line for line in lines)
    row = _row(lines, "kd+at")
    for cell in ("89.35 ± 1.22", "[88.13, 90.57]", "+1.23", "[-1.23, +3.45]", "0.0312"):
        assert cell in row
    wide = _render(160, print_comparison, COMPARISON)
    assert _row(wide, "teacher").startswith("│ teacher ")


def test_wide_layout_keeps_the_column_positions() -> None:
    """Scripts split a row on "│": the loss stays the third cell, the selected epoch comes last."""
    lines = _render(120, print_results, RESULTS)
    cells = [c.strip() for c in _row(lines, "teacher").split("│")]
    assert cells[1:4] == ["teacher", "93.91%", "0.1235"] and cells[-2] == "14/15"
