"""`kdlab compare` on two seeds ends with one verdict line per distilled arm and the two-seed flag;
comparison.json records the verdicts and the raw accuracy interval; report.html shows the same
sentences; `kdlab show` prints an accuracy interval past 100 % clipped to 100.00."""

from __future__ import annotations

import contextlib
import html
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
from clihelp import TINY_COMPARE

from kdlab.report.verdict import verdicts

pytestmark = pytest.mark.e2e  # a whole (tiny) comparison: `pytest -m "not e2e"` skips it


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``kdlab ARGV`` in-process (exit status 0 expected); its stdout."""
    from kdlab import cli

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["kdlab", *argv])
    cli.main()
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``kdlab compare digits -m kd,dkd --seeds 2 --set … -q``: its folder and its stdout."""
    from kdlab import cli

    out = tmp_path_factory.mktemp("cmp")
    sets = [a for s in TINY_COMPARE for a in ("--set", s)]
    buf = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setattr(
            sys, "argv", ["kdlab", "compare", "digits", "-m", "kd,dkd", "--seeds", "2", *sets, "--out", str(out), "-q"]
        )
        cli.main()
    (folder,) = out.iterdir()
    return folder, buf.getvalue()


def test_compare_ends_with_a_verdict_per_distilled_arm(compared: tuple[Path, str]) -> None:
    folder, printed = compared
    comp = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    stored = comp["verdicts"]
    assert [v["arm"] for v in stored] == ["kd", "dkd"]
    assert stored == verdicts(comp)  # what is recorded is what the arms' paired differences say
    text = " ".join(printed.split())  # rich wraps long lines at the terminal width
    for v in stored:
        assert v["seeds"] == 2 and v["few_seeds"] and v["outcome"] in {"helps", "hurts", "inconclusive"}
        d = comp["arms"][v["arm"]]["diff_vs_scratch"]
        assert v["diff_points"] == pytest.approx(100 * d["mean"])
        assert f"{100 * d['mean']:+.2f} points" in v["sentence"]
        assert " ".join(v["sentence"].split()) in text
        assert v["sentence"].endswith("Only 2 seeds: treat as a first look (use --seeds 3 or more).")
    # the verdicts come after the table
    assert text.index(stored[0]["sentence"].split(" — ")[0] + " — ") > text.index("Δ vs scratch")
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="verdict"' in page and page.index('id="verdict"') < page.index('id="summary"')
    for v in stored:
        assert html.escape(v["sentence"]) in page


def test_an_accuracy_interval_past_100_is_shown_clipped_and_kept_raw(
    compared: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdlab.config import load_experiment
    from kdlab.lab.compare import write_comparison

    folder = tmp_path / "cmp"
    shutil.copytree(compared[0], folder)
    comp = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    for seed, acc in zip(comp["seeds"], (0.985, 0.999), strict=True):  # teacher 99.2 ± 8.9 on two seeds
        path = folder / f"seed-{seed}" / "results.json"
        res = json.loads(path.read_text(encoding="utf-8"))
        res["arms"]["teacher"]["test_accuracy"] = acc
        path.write_text(json.dumps(res), encoding="utf-8")
    write_comparison(folder, load_experiment("digits", TINY_COMPARE), comp["methods"], comp["seeds"], status="complete")
    raw = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))["arms"]["teacher"]
    assert raw["mean"] == pytest.approx(0.992) and raw["ci95_high"] > 1.0  # the record keeps the raw interval
    shown = _cli(["show", str(folder)], monkeypatch, capsys)
    row = next(line for line in shown.splitlines() if "teacher" in line)
    assert "99.20" in row and "100.00]" in row
    assert f"{100 * raw['ci95_high']:.2f}" not in row
    _cli(["report", str(folder)], monkeypatch, capsys)
    page = (folder / "report.html").read_text(encoding="utf-8")
    teacher = page[page.index('<tr data-arm="teacher">') :][:400]
    assert f"[{100 * raw['ci95_low']:.2f}, 100.00]" in teacher
