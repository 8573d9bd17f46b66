"""The terminal table of a comparison (rich), built from comparison.json."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdlab.report.render import acc_interval, interval, p_value, pct, points
from kdlab.report.table import fit_width
from kdlab.report.verdict import verdicts


def comparison_table(comp: dict[str, Any]) -> Table:
    """Arm, seeds, mean test accuracy ± 95% half-interval, interval (clipped to [0, 100]), paired Δ vs
    scratch [CI] (not clipped), p."""
    data = comp.get("data") or {}
    table = Table(
        title=f"{comp.get('name', 'comparison')} — {data.get('name', '?')}, seeds {comp.get('seeds')}",
        title_justify="left",
        caption="acc: test accuracy %, mean ± half of the 95% t-interval (CI shown clipped to 0–100); "
        "Δ: paired difference to scratch, points [95% CI]; p: paired t-test",
        caption_justify="left",
    )
    for col in ("arm", "n", "test acc", "95% CI", "Δ vs scratch", "Δ 95% CI", "p"):
        table.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    for arm, s in comp.get("arms", {}).items():
        mean = s.get("mean")
        acc = pct(mean)
        if mean is not None and s.get("ci95_high") is not None:
            acc += f" ± {100 * (s['ci95_high'] - mean):.2f}"
        d = s.get("diff_vs_scratch") or {}
        table.add_row(
            arm,
            str(s.get("n", 0)),
            acc,
            acc_interval(s.get("ci95_low"), s.get("ci95_high")),
            points(d.get("mean")) if d else "",
            interval(d.get("ci95_low"), d.get("ci95_high"), signed=True) if d else "",
            p_value(d.get("p_value")) if d else "",
        )
    return table


def print_comparison(comp: dict[str, Any], console: Console | None = None, *, folder: Path | None = None) -> None:
    """Print the table, the status when not complete, the notes, given the comparison's ``folder``
    its seed runs (each one a run folder for ``kdlab show`` / ``predict`` / ``export``), and last one
    verdict line per distilled arm (:func:`kdlab.report.verdict.verdicts`, recomputed from ``arms``)."""
    console = console or Console()
    table = comparison_table(comp)
    fit_width(table, console.width)  # an 80-column terminal: no vertical borders, then tighter columns
    console.print(table)
    if comp.get("status") != "complete":
        resume = f"; resume with: kdlab compare --resume {shlex.quote(str(folder))}" if folder is not None else ""
        console.print(f"comparison status: {comp.get('status')}{resume}", style="yellow", markup=False)
    if folder is not None and (seed_folders := comp.get("seed_folders") or {}):
        names = ", ".join(str(n) for n in seed_folders.values())
        example = Path(folder) / str(next(iter(seed_folders.values())))
        console.print(
            f"seed runs in {folder}: {names} (one seed: kdlab show {shlex.quote(str(example))})",
            markup=False,
            highlight=False,
        )
    notes = {s.get("note") for s in comp.get("arms", {}).values() if s.get("note")}
    for note in sorted(notes):
        console.print(f"[dim]{note}[/dim]")
    for v in verdicts(comp):
        style = {"helps": "green", "hurts": "red"}.get(v["outcome"])
        console.print(v["sentence"], style=style, markup=False, highlight=False)
