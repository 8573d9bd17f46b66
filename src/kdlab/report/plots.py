"""Matplotlib plots of a run (Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from kdlab.io import atomic_write_bytes

ARM_TITLES = {"teacher": "Teacher", "scratch": "Student from scratch", "distilled": "Distilled student"}


def plot_accuracy(run_dir: Path, history_rows: list[dict[str, Any]]) -> Path | None:
    """``plots/accuracy.png``: training vs validation accuracy per epoch, one panel per arm.

    A training curve far above its validation curve is over-fitting; arms with no history (a
    teacher loaded from a checkpoint) get no panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in ARM_TITLES if any(r["arm"] == a for r in history_rows)]
    if not arms:
        return None
    fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 3.4), sharey=True, squeeze=False)
    for ax, arm in zip(axes[0], arms, strict=True):
        rows = [r for r in history_rows if r["arm"] == arm]
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [100 * r["train_accuracy"] for r in rows], "o-", label="training")
        if all("val_accuracy" in r for r in rows):
            ax.plot(epochs, [100 * r["val_accuracy"] for r in rows], "s--", label="validation")
        ax.set_title(ARM_TITLES[arm])
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs if len(epochs) <= 12 else epochs[:: max(1, len(epochs) // 10)])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][0].legend(loc="lower right")
    fig.tight_layout()
    out = Path(run_dir) / "plots" / "accuracy.png"
    out.parent.mkdir(exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out
