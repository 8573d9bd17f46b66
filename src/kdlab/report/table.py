"""The side-by-side terminal table of a run (rich), built from results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdlab.runs import ARMS


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
    for arm in [*ARMS, *(a for a in arms if a not in ARMS)]:
        a = arms.get(arm)
        if a is None:
            continue
        label = arm
        gain = ""
        acc = _num(a.get("test_accuracy"))
        if arm not in ("teacher", "scratch") and _num(scratch) is not None and acc is not None:
            gain = f"{100 * (acc - scratch):+.2f}"
        agree = _num(a.get("teacher_agreement"))
        ms = _num(a.get("ms_per_step"))
        loss, params, size, seconds = (_num(a.get(k)) for k in ("test_loss", "params", "size_bytes", "train_seconds"))
        table.add_row(
            label,
            "—" if acc is None else f"{100 * acc:.2f}%",
            "—" if loss is None else f"{loss:.4f}",  # null in results.json: a non-finite value (see "nonfinite")
            "—" if params is None else f"{int(params):,}",
            "—" if size is None else human_bytes(size),
            "—" if seconds is None else f"{seconds:.1f}",
            "—" if ms is None else f"{ms:.2f}",
            "—" if agree is None else f"{100 * agree:.1f}%",
            gain,
        )
    return table


def _num(x: Any) -> float | None:
    """A recorded number, or None for a missing one or ``null`` (a non-finite value written as null)."""
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def print_results(results: dict[str, Any], console: Console | None = None, run_dir: Path | None = None) -> None:
    """The table, then the run's status when it is not complete: with ``run_dir``, how to go on."""
    console = console or Console()
    console.print(results_table(results))
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
