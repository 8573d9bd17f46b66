"""The side-by-side terminal table of a run (rich), built from results.json."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from kdlab.runs import ARMS


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


#: Every column of the run table, in order (the column positions are kept: scripts split rows on "│");
#: docs/run-folder.md explains each.
COLUMNS = ("arm", "test acc", "loss", "params", "size", "train s", "ms/step", "agree", "Δ acc", "epoch")
#: The columns left out, in this order, while the table is wider than the terminal.
DROP_ORDER = ("size", "ms/step", "loss", "train s", "params", "agree")
_NOTES = {
    "epoch": "epoch: the one whose weights are kept and tested, of those trained (train.select: best-val "
    "keeps the best validation accuracy)",
    "agree": "agree: top-1 agreement with the teacher",
    "Δ acc": "Δ acc: distilled − scratch, points",
}


def results_table(results: dict[str, Any], width: int | None = None) -> Table:
    """Arm, test accuracy, test loss, parameters, size, train seconds, ms/step, agreement, gain, selected epoch.

    With ``width`` (the terminal's columns) the table fits it: first without vertical borders, then
    leaving out the columns of ``DROP_ORDER`` one by one (the caption names them), last with one space
    between columns.
    """
    if width is None:
        return _build(results, COLUMNS)
    columns = list(COLUMNS)
    table = _build(results, columns)
    for col in (None, *DROP_ORDER):
        if col is not None:
            columns.remove(col)
            table = _build(results, columns)
        if fit_width(table, width, tight=False):
            return table
    fit_width(table, width)
    return table


def fit_width(table: Table, width: int, *, tight: bool = True) -> bool:
    """Make ``table`` fit ``width`` columns if it can: the wide layout when it fits, else no vertical borders,
    else (``tight``) one space between columns. Returns whether it fits; the table is changed in place."""
    measure = Console(width=10_000)
    if measure.measure(table).maximum <= width:
        return True
    table.box, table.show_edge, table.pad_edge = box.SIMPLE_HEAD, False, False
    if measure.measure(table).maximum <= width:
        return True
    if not tight:
        return False
    table.padding = (0, 0)
    return measure.measure(table).maximum <= width


def _build(results: dict[str, Any], columns: Sequence[str]) -> Table:
    data = results.get("data", {})
    title = f"{results.get('name', 'run')} — {data.get('name', '?')}, seed {results.get('seed')}"
    notes = [_NOTES[c] for c in ("Δ acc", "agree", "epoch") if c in columns]
    left_out = [c for c in COLUMNS if c not in columns]
    if left_out:
        notes.append(f"not shown at this width: {', '.join(left_out)} (see results.json)")
    table = Table(
        title=title,
        title_justify="left",
        caption="; ".join(notes),
        caption_justify="left",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "arm" else "right", no_wrap=True)
    arms = results.get("arms", {})
    scratch = arms.get("scratch", {}).get("test_accuracy")
    # The lab's three arms first, then any others (one per method in a comparison's seed folder).
    for arm in [*ARMS, *(a for a in arms if a not in ARMS)]:
        a = arms.get(arm)
        if a is None:
            continue
        cells = _cells(arm, a, scratch)
        table.add_row(*(cells[c] for c in columns))
    return table


def _cells(arm: str, a: dict[str, Any], scratch: Any) -> dict[str, str]:
    gain = ""
    acc = _num(a.get("test_accuracy"))
    if arm not in ("teacher", "scratch") and _num(scratch) is not None and acc is not None:
        gain = f"{100 * (acc - scratch):+.2f}"
    agree = _num(a.get("teacher_agreement"))
    ms = _num(a.get("ms_per_step"))
    loss, params, size, seconds = (_num(a.get(k)) for k in ("test_loss", "params", "size_bytes", "train_seconds"))
    selected, epochs = _num(a.get("selected_epoch")), _num(a.get("epochs"))
    return {
        "arm": arm,
        "test acc": "—" if acc is None else f"{100 * acc:.2f}%",
        "epoch": "—" if selected is None or not epochs else f"{int(selected)}/{int(epochs)}",
        "loss": "—" if loss is None else f"{loss:.4f}",  # null in results.json: a non-finite value (see "nonfinite")
        "params": "—" if params is None else f"{int(params):,}",
        "size": "—" if size is None else human_bytes(size),
        "train s": "—" if seconds is None else f"{seconds:.1f}",
        "ms/step": "—" if ms is None else f"{ms:.2f}",
        "agree": "—" if agree is None else f"{100 * agree:.1f}%",
        "Δ acc": gain,
    }


def _num(x: Any) -> float | None:
    """A recorded number, or None for a missing one or ``null`` (a non-finite value written as null)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def print_results(results: dict[str, Any], console: Console | None = None, run_dir: Path | None = None) -> None:
    """The table, then the run's status when it is not complete: with ``run_dir``, how to go on."""
    console = console or Console()
    console.print(results_table(results, console.width))
    status = results.get("status")
    if status != "complete":
        line = f"run status: {status}"
        error = (results.get("failed") or {}).get("error") if status == "failed" else None
        if error:
            line += f" ({error})"
        if run_dir is not None and status in ("running", "interrupted"):
            from kdlab.runs import read_failed_marker, resume_command

            failed = read_failed_marker(run_dir) if status == "running" else None
            if failed is not None:  # the failure could not be recorded in results.json (a full disk)
                line = f"run status: failed ({failed or 'not recorded: the disk was full'})"
            if "methods" in results:  # a comparison's seed folder: the comparison resumes it
                hint = f"resume its comparison with: kdlab compare EXPERIMENT --resume {Path(run_dir).parent}"
            else:
                hint = f"resume with: {resume_command(run_dir)}"
            if "resume with" not in line:  # a recorded storage error already says it
                line += f" (unfinished; {hint})"
        console.print(line, style="yellow", markup=False, highlight=False, soft_wrap=True)
    note = results.get("comparison", {}).get("note")
    if note:
        console.print(f"[dim]{note}[/dim]")
    skipped = results.get("data", {}).get("skipped_count", 0)
    if skipped:
        console.print(f"[yellow]{skipped} data files could not be decoded and were skipped (see results.json)[/yellow]")
