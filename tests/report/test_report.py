"""The HTML report: written for runs and comparisons, self-contained, and checked in headless
Chromium (Debian's `chromium` package, driven by Playwright; no browser is ever downloaded)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS

from kdlab.config import load_experiment
from kdlab.lab.compare import run_comparison
from kdlab.report.render import write_report

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = ["name=tiny", "teacher.model=mlp-teacher", "teacher.epochs=1", "student.epochs=2", "data.train_limit=200"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = run_comparison(load_experiment("digits", TINY), "kd", 2, out=tmp_path_factory.mktemp("rep"))
    return write_report(folder)


def test_report_is_self_contained_and_saves_plots(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    # no network and no other file: no http(s) URL, no external script or stylesheet, images inline
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)
    assert "<script" not in html and "<link" not in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    plots = {p.name for p in (report.parent / "plots").iterdir()}
    assert plots >= {"accuracy_curves.png", "loss_parts.png", "tradeoff.png", "confusion.png"}
    assert "mlp-student" in html and "seed: 0" in html  # model names; resolved config embedded


def test_report_renders_in_headless_chromium(report: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    comp = json.loads((report.parent / "comparison.json").read_text())
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            cells = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('#summary tbody tr')].map(tr =>
                    [tr.dataset.arm,
                     Object.fromEntries([...tr.cells].map(td => [td.className, td.textContent.trim()]))]))"""
            )
            cost = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('#cost tbody tr')].map(tr =>
                    [tr.dataset.arm,
                     Object.fromEntries([...tr.cells].map(td => [td.className, td.textContent.trim()]))]))"""
            )
            settings = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('#arm-settings tbody tr')].map(tr =>
                    [tr.dataset.arm, tr.querySelector('.settings').textContent.trim()]))"""
            )
            # the page reads without sideways scrolling in a 1300-px window
            overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
            images = page.evaluate("() => [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        finally:
            browser.close()
    assert errors == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert list(cells) == list(comp["arms"]) == ["teacher", "scratch", "kd"]
    for arm, entry in comp["arms"].items():
        row = cells[arm]
        assert row["n"] == "2"
        assert row["mean"] == f"{100 * entry['mean']:.2f}"
        low, high = (min(max(100 * entry[k], 0.0), 100.0) for k in ("ci95_low", "ci95_high"))  # shown clipped
        assert row["ci"] == f"[{low:.2f}, {high:.2f}]"
    diff = comp["arms"]["kd"]["diff_vs_scratch"]
    assert cells["kd"]["diff"] == f"{100 * diff['mean']:+.2f}"
    assert cells["kd"]["diff-ci"] == f"[{100 * diff['ci95_low']:+.2f}, {100 * diff['ci95_high']:+.2f}]"
    assert cells["kd"]["p"] == ("—" if diff["p_value"] is None else f"{diff['p_value']:.3g}")
    assert cells["scratch"]["diff"] == ""
    assert overflow <= 0
    assert list(cost) == list(comp["arms"])
    for arm, entry in comp["arms"].items():
        m = entry["metrics"]
        assert cost[arm]["params"] == f"{int(m['params']['mean']):,}"
        assert cost[arm]["ece"] == f"{m['ece']['mean']:.4f}"
    assert cost["kd"]["agree"] == f"{100 * comp['arms']['kd']['metrics']['teacher_agreement']['mean']:.2f}"
    assert cost["teacher"]["agree"] == "—"  # the teacher is not compared with itself
    assert len(images) == 4 and all(ok and w > 0 and h > 0 for ok, w, h in images)
    # each distilled arm's own settings (not only the base config's distill:), read as the reader sees them
    assert list(settings) == list(comp["methods"]) == ["kd"]
    kd = comp["methods"]["kd"]
    assert settings["kd"].startswith(f"method=kd · alpha={kd['alpha']} · temperature={kd['temperature']}")
    # the curves are one panel per arm (several seeds), at least as wide as the page's tables read
    assert images[0][1] >= 1000


def test_render_escapes_every_string_whatever_the_template_name(tmp_path: Path) -> None:
    """select_autoescape() goes by the file name and left `report.html.j2` unescaped."""
    from kdlab.report.collect import ReportData
    from kdlab.report.render import render_report

    mark = "<script>alert(1)</script>"
    data = ReportData(
        kind="run",
        folder=tmp_path,
        title=mark,
        arms={mark: {"model": mark, "n": 0, "metrics": {}}},
        seeds={0: {"arms": {}}},
        history={},
        config_text=f"name: {mark}\n",
        env={"argv": [mark]},
        status=mark,
    )
    html = render_report(data)
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 6  # title ×2, arm ×2 rows, model, config, status
    assert 'data-arm="&lt;script&gt;' in html
