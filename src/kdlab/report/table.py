"""The side-by-side terminal table of a run (rich), built from results.json."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

ARM_LABELS = {"teacher": "teacher", "scratch": "scratch", "distilled": "distilled"}


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def results_table(results: dict[str, Any]) -> Table:
    """Arm, test accuracy, test loss, parameters, size, train seconds, ms/step, agreement, gain."""
    data = results.get("data", {})
    title = f"{results.get('name', 'run')} — {data.get('name', '?')}, seed {results.get('seed')}"
    table = Table(
        title=title,
        title_justify="left",
        caption="Δ acc: distilled − scratch, points; agree: top-1 agreement with the teacher",
        caption_justify="left",
    )
    # Short headers so the table fits an 80-column terminal; docs/run-folder.md explains each.
    for col in ("arm", "test acc", "loss", "params", "size", "train s", "ms/step", "agree", "Δ acc"):
        table.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    arms = results.get("arms", {})
    scratch = arms.get("scratch", {}).get("test_accuracy")
    # The lab's three arms first, then any others (one per method in a comparison's seed folder).
    for arm in [*ARM_LABELS, *(a for a in arms if a not in ARM_LABELS)]:
        a = arms.get(arm)
        if a is None:
            continue
        label = ARM_LABELS.get(arm, arm)
        gain = ""
        if arm not in ("teacher", "scratch") and scratch is not None:
            gain = f"{100 * (a['test_accuracy'] - scratch):+.2f}"
        agree = a.get("teacher_agreement")
        ms = a.get("ms_per_step")
        table.add_row(
            label,
            f"{100 * a['test_accuracy']:.2f}%",
            f"{a['test_loss']:.4f}",
            f"{a['params']:,}",
            human_bytes(a["size_bytes"]),
            f"{a['train_seconds']:.1f}",
            "—" if ms is None else f"{ms:.2f}",
            "—" if agree is None else f"{100 * agree:.1f}%",
            gain,
        )
    return table


def print_results(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(results_table(results))
    status = results.get("status")
    if status != "complete":
        console.print(f"[yellow]run status: {status}[/yellow]")
    note = results.get("comparison", {}).get("note")
    if note:
        console.print(f"[dim]{note}[/dim]")
    skipped = results.get("data", {}).get("skipped_count", 0)
    if skipped:
        console.print(f"[yellow]{skipped} data files could not be decoded and were skipped (see results.json)[/yellow]")
