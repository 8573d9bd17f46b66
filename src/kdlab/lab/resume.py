"""``kdlab run --resume``: continue an interrupted run folder with its own config, or finish the
files a complete run promises (:mod:`kdlab.lab.recovery` holds the bookkeeping it relies on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab.errors import KdlabError
from kdlab.lab.recovery import RunLock, clear_failed_marker
from kdlab.runs import (
    ACCURACY_PLOT,
    CONFIG_FILE,
    checkpoint_folders,
    has_config,
    has_results,
    read_config,
    read_history_rows,
    read_results,
)


def resume_lab(run_dir: Path, **options: Any) -> Path:
    """Continue the run in ``run_dir`` with its own ``config.resolved.yaml``.

    Finished arms are skipped, the unfinished arm continues from its last complete epoch, and the
    result equals an uninterrupted run with the same seed (bit for bit on a CPU, timings aside).
    ``options`` go to :func:`kdlab.lab.run.run_lab` (``progress``, ``log``, ``stop``). A run that is
    already complete is left as it is, but for a promised file that is missing (the accuracy plot).
    """
    from kdlab.lab.run import run_lab
    from kdlab.train.checkpoint import ArmCheckpoint

    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not has_config(run_dir):
        raise KdlabError(f"--resume {run_dir}: not a run folder (no {CONFIG_FILE}); give a folder under runs/")
    cfg = read_config(run_dir)
    for folder in checkpoint_folders(run_dir):  # a damaged checkpoint: refused before any write
        if (ckpt := ArmCheckpoint(folder, folder.name)).exists():
            ckpt.verify()
    if has_results(run_dir):
        results = read_results(run_dir)
        if results.get("status") == "complete" and _finish_complete(run_dir, results):
            return run_dir
    clear_failed_marker(run_dir)
    return run_lab(cfg, resume=run_dir, **options)


def _finish_complete(run_dir: Path, results: dict[str, Any]) -> bool:
    """For a run that says complete, write the files it promises that are missing (the accuracy
    plot); False when an arm's weights are gone, so the run is resumed to train it again."""
    from kdlab.report.figures import plot_accuracy

    arms = results.get("arms")
    if not isinstance(arms, dict) or not all(
        isinstance(a, dict) and isinstance(a.get("weights"), str) and (run_dir / a["weights"]).is_file()
        for a in arms.values()
    ):
        return False
    if not (run_dir / ACCURACY_PLOT).is_file():
        with RunLock(run_dir):
            selected = {a: r.get("selected_epoch") for a, r in arms.items()}
            plot_accuracy(run_dir, read_history_rows(run_dir, set(arms)), selected)
    return True
