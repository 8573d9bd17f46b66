"""Run folders, the unit of record: ``runs/<timestamp>-<name>/`` with config, env, history,
results, weights and plots. See ``docs/run-folder.md`` for the layout and the results schema."""

from __future__ import annotations

import csv
import io
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from kdlab.errors import ConfigError, KdlabError
from kdlab.io import atomic_write_json, atomic_write_text
from kdlab.version import __version__

RESULTS_SCHEMA_VERSION = 1


def create_run_dir(out: Path, name: str) -> Path:
    """Create a new, unique run folder under ``out`` (exclusive creation: never reuses one)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KdlabError(f"out: cannot create {out} ({e.strerror}); choose a writable --out") from None
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1000):
        path = out / (f"{stamp}-{safe}" if attempt == 0 else f"{stamp}-{safe}-{attempt + 1}")
        try:
            path.mkdir()  # atomic: fails if another process took the name first
        except FileExistsError:
            continue
        except OSError as e:
            raise KdlabError(f"out: cannot write in {out} ({e.strerror}); choose a writable --out") from None
        return path
    raise KdlabError(f"out: could not find a free run folder name in {out}")


def git_commit() -> dict[str, Any]:
    """The kdlab source checkout's commit and dirty flag, when it runs from one."""
    src = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def env_info(device: torch.device, seed: int) -> dict[str, Any]:
    """Everything needed to repeat a run: versions, commit, device, threads, seed."""
    import numpy

    info: dict[str, Any] = {
        "kdlab_version": __version__,
        "git": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "seed": seed,
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.resolved.yaml", yaml.safe_dump(config, sort_keys=False))


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """history.csv: one row per arm × epoch; columns are the union of the rows' keys."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "history.csv", buf.getvalue())


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "results.json", results)


def read_results(run_dir: Path) -> dict[str, Any]:
    """Read and validate ``results.json`` of a run folder (:class:`kdlab.records.ResultsRecord`).

    A wrong path, a file that is not JSON, too large, too deeply nested, or a field out of its
    schema is one line naming the file and the field; the parsed dict is returned as written.
    """
    from kdlab.records import ResultsRecord, check_record, read_json_record

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KdlabError(f"{run_dir}: not a run folder (expected a folder with results.json)")
    path = run_dir / "results.json"
    if not path.is_file():
        raise KdlabError(f"{run_dir}: has no results.json (an unfinished or foreign folder?)")
    data = read_json_record(path)
    check_record(ResultsRecord, data, path, what="a kdlab results file")
    return dict(data)


def resume_command(run_dir: Path) -> str:
    """The exact command that continues ``run_dir``."""
    return f"kdlab run --resume {shlex.quote(str(run_dir))}"


FAILED_MARKER = ".failed"
"""Left beside ``results.json`` when a failure could not be recorded in it (a full disk): holds
the error message, or nothing when even that did not fit. ``kdlab show`` reads it; a resumed run
that completes removes it."""


def read_failed_marker(run_dir: Path) -> str | None:
    """The message of an unrecorded failure (:data:`FAILED_MARKER`; ``""`` when it holds none), or None."""
    path = Path(run_dir) / FAILED_MARKER
    try:
        with path.open("rb") as f:
            return f.read(4000).decode("utf-8", "replace").strip()
    except OSError:
        return None


def read_history_rows(run_dir: Path, arms: set[str]) -> list[dict[str, Any]]:
    """The rows of ``history.csv`` that belong to ``arms``, with numbers parsed back exactly.

    Floats were written with ``repr`` and read back bit for bit; empty cells (a column another arm
    has) are dropped, so rewriting the rows gives the same file.
    """
    import io

    from kdlab.records import DAMAGED, HistoryRow, check_record, read_record_bytes

    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    try:
        text = read_record_bytes(path).decode("utf-8")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise KdlabError(f"{path}: unreadable ({str(e)[:120]}); {DAMAGED}") from None
    out = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        if None in row:
            raise KdlabError(f"{path}: line {n}: more cells than columns; {DAMAGED}")
        parsed = {k: _number(v) for k, v in row.items() if v not in ("", None)}
        check_record(HistoryRow, parsed, path, at=f"line {n}: ")
        if not isinstance(parsed.get("arm"), str):
            raise KdlabError(f"{path}: line {n}: arm: Field required; {DAMAGED}")
        if parsed["arm"] in arms:
            out.append(parsed)
    return out


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def read_env(path: Path) -> dict[str, Any]:
    """``env.json`` read and validated (:class:`kdlab.records.EnvRecord`); the dict as written."""
    from kdlab.records import DAMAGED, EnvRecord, check_record, read_json_record

    hint = f"{DAMAGED}, or delete {Path(path).name} to keep going without it"
    env = read_json_record(path, hint=hint)
    check_record(EnvRecord, env, path, hint=hint, what="an environment record")
    return dict(env)
