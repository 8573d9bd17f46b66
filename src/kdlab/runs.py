"""Run folders, the unit of record: ``runs/<timestamp>-<name>/`` with config, env, history,
results, weights and plots. See ``docs/run-folder.md`` for the layout and the results schema.

This module is the one owner of the run folder's files: it alone knows their names (the constants
below, the arm names :data:`ARMS`, the weights names :data:`WEIGHT_FILES`) and reads and writes
them; the schemas of what they hold are in :mod:`kdlab.records`. Every other module goes through
these functions instead of building a path or parsing a file itself.
"""

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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml

from kdlab.errors import ConfigError, KdlabError
from kdlab.io import atomic_write_json, atomic_write_text
from kdlab.version import __version__

if TYPE_CHECKING:
    from kdlab.config.schema import ExperimentConfig

RESULTS_SCHEMA_VERSION = 1

RESULTS_FILE = "results.json"
HISTORY_FILE = "history.csv"
CONFIG_FILE = "config.resolved.yaml"
ENV_FILE = "env.json"
COMPARISON_FILE = "comparison.json"
COMPARISON_CSV = "comparison.csv"
VOCAB_FILE = "vocab.json"
REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
ACCURACY_PLOT = f"{PLOTS_DIR}/accuracy.png"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"

ARMS = ("teacher", "scratch", "distilled")
"""The three arms of a lab run, in the order they are trained."""


class _WeightFiles(dict[str, str]):
    """Arm -> weights file name: the three lab arms' fixed names, ``student-<arm>`` for any other
    arm (one per method in a comparison's seed folder)."""

    def __missing__(self, arm: str) -> str:
        return "student-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", arm) + ".safetensors"


WEIGHT_FILES = _WeightFiles(
    teacher="teacher.safetensors", scratch="student-scratch.safetensors", distilled="student-distilled.safetensors"
)
PROJECTORS_FILE = "student-distilled.projectors.safetensors"


def plot_path(folder: Path, name: str) -> Path:
    """``plots/<name>.png`` of a run or comparison folder."""
    return Path(folder) / PLOTS_DIR / f"{name}.png"


def seed_dir(comp_dir: Path, seed: int) -> Path:
    """The folder of one seed's lab run inside a comparison folder: ``seed-<seed>/``."""
    return Path(comp_dir) / f"seed-{seed}"


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """The arms' checkpoint folders (``checkpoints/<arm>/``) of a run folder, sorted."""
    return sorted((Path(run_dir) / CHECKPOINTS_DIR).glob("*/"))


def has_results(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a ``results.json`` (a lab run got as far as its first record)."""
    return (Path(run_dir) / RESULTS_FILE).is_file()


def has_config(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds its ``config.resolved.yaml`` (it is a started run or comparison)."""
    return (Path(run_dir) / CONFIG_FILE).is_file()


def has_env(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds its ``env.json``."""
    return (Path(run_dir) / ENV_FILE).is_file()


def is_comparison(folder: Path) -> bool:
    """Whether ``folder`` is a comparison folder (it holds ``comparison.json``)."""
    return (Path(folder) / COMPARISON_FILE).is_file()


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


ENV_VARS = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "MKL_NUM_THREADS",
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTHONHASHSEED",
    "CUDA_VISIBLE_DEVICES",
)
"""The environment variables that change numerics, recorded in ``env.json``."""


def repro_info(deterministic: bool) -> dict[str, Any]:
    """The reproducibility part of ``env.json``: library versions, threads, deterministic flags,
    the environment variables that change numerics, and the accelerator stack."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for pkg in ("numpy", "safetensors", "scikit-learn", "pydantic", "Pillow", "PyYAML"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "deterministic": deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "interop_threads": torch.get_num_interop_threads(),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "packages": versions,
        "env": {k: os.environ.get(k) for k in ENV_VARS},
    }


def write_env(run_dir: Path, device: torch.device, seed: int, deterministic: bool) -> None:
    """``env.json``: :func:`env_info` and :func:`repro_info` — what a lab run and a comparison
    folder record so that they can be repeated."""
    atomic_write_json(Path(run_dir) / ENV_FILE, {**env_info(device, seed), **repro_info(deterministic)})


def note_resume(run_dir: Path, argv: list[str]) -> None:
    """Append this resumption (time, command) to ``env.json``'s ``resumes`` list."""
    path = Path(run_dir) / ENV_FILE
    env = read_env(path) if path.is_file() else {}
    env.setdefault("resumes", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": argv})
    atomic_write_json(path, env)


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    """``config.resolved.yaml``: the full, validated config the run (or comparison) uses."""
    atomic_write_text(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: Path, *, hint: str | None = None) -> ExperimentConfig:
    """The run's (or comparison's) ``config.resolved.yaml``, read bounded and validated again
    (:func:`kdlab.records.read_run_config`); ``hint`` ends an error's line."""
    from kdlab.records import DAMAGED, read_run_config

    return read_run_config(Path(run_dir) / CONFIG_FILE, hint=DAMAGED if hint is None else hint)


def read_config_text(run_dir: Path) -> str:
    """The run's ``config.resolved.yaml`` as text, validated first; empty when there is none."""
    from kdlab.config.load import MAX_FILE_BYTES
    from kdlab.records import read_record_bytes

    if not has_config(run_dir):
        return ""
    read_config(run_dir)
    return read_record_bytes(Path(run_dir) / CONFIG_FILE, limit=MAX_FILE_BYTES).decode("utf-8")


def write_history(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """history.csv: one row per arm × epoch; columns are the union of the rows' keys."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(run_dir) / HISTORY_FILE, buf.getvalue())


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    """``results.json``, atomically (written after each arm, and last of all)."""
    atomic_write_json(Path(run_dir) / RESULTS_FILE, results)


def read_results(run_dir: Path) -> dict[str, Any]:
    """Read and validate ``results.json`` of a run folder (:class:`kdlab.records.ResultsRecord`).

    A wrong path, a file that is not JSON, too large, too deeply nested, or a field out of its
    schema is one line naming the file and the field; the parsed dict is returned as written.
    """
    from kdlab.records import ResultsRecord, check_record, read_json_record

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise KdlabError(f"{run_dir}: not a run folder (expected a folder with {RESULTS_FILE})")
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise KdlabError(f"{run_dir}: has no {RESULTS_FILE} (an unfinished or foreign folder?)")
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
    from kdlab.records import DAMAGED, HistoryRow, check_record, read_record_bytes

    path = Path(run_dir) / HISTORY_FILE
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
    """``env.json`` read and validated (:class:`kdlab.records.EnvRecord`); the dict as written.

    ``path`` is the file itself or the folder that holds it."""
    from kdlab.records import DAMAGED, EnvRecord, check_record, read_json_record

    path = Path(path)
    if path.is_dir():
        path = path / ENV_FILE
    hint = f"{DAMAGED}, or delete {path.name} to keep going without it"
    env = read_json_record(path, hint=hint)
    check_record(EnvRecord, env, path, hint=hint, what="an environment record")
    return dict(env)


def read_run_env(run_dir: Path) -> dict[str, Any]:
    """The folder's ``env.json``, validated; empty when there is none."""
    return read_env(Path(run_dir) / ENV_FILE) if has_env(run_dir) else {}


def read_comparison(comp_dir: Path) -> dict[str, Any]:
    """``comparison.json`` of a comparison folder, read with the record bounds and validated
    (:class:`kdlab.records.ComparisonRecord`); one-line errors for a wrong path or a damaged file."""
    from kdlab.records import COMPARISON_DAMAGED, ComparisonRecord, check_record, read_json_record

    comp_dir = Path(comp_dir)
    path = comp_dir / COMPARISON_FILE
    if not path.is_file():
        raise KdlabError(f"{comp_dir}: has no {COMPARISON_FILE} (not a comparison folder)")
    data = read_json_record(path, hint=COMPARISON_DAMAGED)
    if isinstance(data, dict) and data.get("kind") != "comparison":
        raise KdlabError(f"{path}: not a kdlab comparison file (kind is not 'comparison')")
    check_record(ComparisonRecord, data, path, hint=COMPARISON_DAMAGED, what="a kdlab comparison file")
    return dict(data)


def write_comparison_files(
    comp_dir: Path, comparison: dict[str, Any], columns: Sequence[str], rows: Iterable[dict[str, Any]]
) -> None:
    """``comparison.json`` and ``comparison.csv`` (one row per arm × seed, ``columns`` only), atomically.

    A ``complete`` comparison.json is written last, after comparison.csv, so that a full disk in
    between leaves the previous one (``running``, which ``--resume`` finishes); any other goes
    first, so a new comparison folder is resumable from its first write on.
    """
    comp_dir = Path(comp_dir)
    complete = comparison.get("status") == "complete"
    if not complete:
        atomic_write_json(comp_dir / COMPARISON_FILE, comparison)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(comp_dir / COMPARISON_CSV, buf.getvalue())
    if complete:
        atomic_write_json(comp_dir / COMPARISON_FILE, comparison)
