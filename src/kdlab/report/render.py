"""``report.html``: one self-contained page per run or comparison folder.

Rendered with jinja2 from ``templates/report.html.j2`` with every value HTML-escaped (names,
labels, the command line and the config are text, never markup; the page has no script); figures
are embedded as base64 PNG data URIs and styles are inline, so the page needs no network and no
other file. The same figures are saved under ``plots/``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from kdlab.io import atomic_write_text
from kdlab.report.collect import ReportData, load_report_data
from kdlab.report.figures import FIGURES
from kdlab.report.table import human_bytes
from kdlab.report.verdict import clip_points, verdicts
from kdlab.runs import REPORT_FILE
from kdlab.version import __version__


def pct(x: float | None) -> str:
    """A fraction as a percentage with two decimals (``0.9167`` -> ``91.67``); None -> ``—``."""
    return "—" if x is None else f"{100 * x:.2f}"


def points(x: float | None) -> str:
    """A difference of fractions in signed percentage points (``0.0123`` -> ``+1.23``)."""
    return "—" if x is None else f"{100 * x:+.2f}"


def interval(low: float | None, high: float | None, *, signed: bool = False) -> str:
    """``[low, high]`` in percent (or signed points); ``—`` when there is no interval."""
    if low is None or high is None:
        return "—"
    f = points if signed else pct
    return f"[{f(low)}, {f(high)}]"


def acc_interval(low: float | None, high: float | None) -> str:
    """An accuracy interval (fractions) as ``[low, high]`` in percent, clipped to ``[0, 100]``
    (:func:`kdlab.report.verdict.clip_points`; comparison.json keeps the raw t-interval)."""
    if low is None or high is None:
        return "—"
    lo, hi = clip_points(100 * low, 100 * high)
    return f"[{lo:.2f}, {hi:.2f}]"


def p_value(p: float | None) -> str:
    """Three significant digits, or ``—``."""
    return "—" if p is None else f"{p:.3g}"


def number(x: float | None, fmt: str = ".3g") -> str:
    return "—" if x is None else format(x, fmt)


def summary_rows(data: ReportData) -> list[dict[str, Any]]:
    """The summary table's rows, formatted (the same strings the browser test reads back)."""
    rows = []
    for arm, s in data.arms.items():
        m = s.get("metrics", {})
        d = s.get("diff_vs_scratch") or {}

        def mean(key: str, m: dict[str, Any] = m) -> float | None:
            return m.get(key, {}).get("mean")

        size = mean("size_bytes")
        params = mean("params")
        rows.append(
            {
                "arm": arm,
                "model": s.get("model") or "",
                "n": s.get("n", 0),
                "mean": pct(s.get("mean")),
                "ci": acc_interval(s.get("ci95_low"), s.get("ci95_high")),
                "diff": points(d.get("mean")) if d else "",
                "diff_ci": interval(d.get("ci95_low"), d.get("ci95_high"), signed=True) if d else "",
                "p": p_value(d.get("p_value")) if d else "",
                "params": "—" if params is None else f"{int(params):,}",
                "size": "—" if size is None else human_bytes(size),
                "lat1": number(mean("latency_ms_per_sample")),
                "lat32": number(mean("latency_ms_per_batch32")),
                "ece": number(mean("ece"), ".4f"),
                "agree": pct(mean("teacher_agreement")),
                "kl": number(mean("kl_to_teacher"), ".4f"),
            }
        )
    return rows


def seed_rows(data: ReportData) -> list[dict[str, Any]]:
    """Per arm the test accuracy of each seed (percent)."""
    return [
        {
            "arm": arm,
            "values": [
                pct(res["arms"][arm]["test_accuracy"]) if arm in res["arms"] else "—" for res in data.seeds.values()
            ],
        }
        for arm in data.arms
    ]


SETTINGS_SHOWN = ("method", "alpha", "temperature")


def settings_rows(data: ReportData) -> list[dict[str, str]]:
    """Per distilled arm its own distill settings as ``key=value`` text: the method, alpha and
    temperature, and every other setting whose value is not the same for all arms."""
    methods = data.methods
    keys = {k for m in methods.values() for k, v in m.items() if not isinstance(v, dict | list)}
    differ = {k for k in keys if len({json.dumps(m.get(k), sort_keys=True) for m in methods.values()}) > 1}
    shown = [k for k in SETTINGS_SHOWN if k in keys] + sorted(differ - set(SETTINGS_SHOWN))
    return [
        {"arm": arm, "settings": " · ".join(f"{k}={m[k]}" for k in shown if k in m and m[k] is not None)}
        for arm, m in methods.items()
    ]


def render_report(data: ReportData) -> str:
    """The HTML text of the report (figures drawn and saved under ``plots/`` on the way)."""
    from jinja2 import Environment, PackageLoader

    # Escape everything, whatever the template's file name: select_autoescape() goes by the name's
    # ending and would leave "report.html.j2" unescaped, so a run name, class label, command line
    # or config value holding markup would run as script in the reader's browser.
    env = Environment(loader=PackageLoader("kdlab.report", "templates"), autoescape=True)
    figures = []
    for title, draw in FIGURES:
        png = draw(data)
        if png is not None:  # base64 text only ([A-Za-z0-9+/=]): nothing in it can close the attribute
            figures.append({"title": title, "src": "data:image/png;base64," + base64.b64encode(png).decode("ascii")})
    notes = sorted({s["note"] for s in data.arms.values() if s.get("note")})
    return env.get_template("report.html.j2").render(
        data=data,
        rows=summary_rows(data),
        verdicts=verdicts({"arms": data.arms}),
        seed_rows=seed_rows(data),
        settings=settings_rows(data),
        seeds=list(data.seeds),
        figures=figures,
        notes=notes,
        env_text=json.dumps(data.env, indent=2),
        version=__version__,
    )


def write_report(folder: Path) -> Path:
    """Write ``report.html`` (and ``plots/*.png``) for a run or comparison folder; returns its path.

    Raises:
        KdlabError: the folder holds neither results.json nor comparison.json.
    """
    data = load_report_data(Path(folder))
    path = Path(folder) / REPORT_FILE
    atomic_write_text(path, render_report(data))
    return path
