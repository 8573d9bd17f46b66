"""The report's figures (matplotlib, Agg backend), for any set of arms and seeds.

Each function draws one figure from :class:`~kdlab.report.collect.ReportData`, saves it as
``plots/<name>.png`` in the reported folder (atomically) and returns the PNG bytes, which the
HTML report embeds. A figure with nothing to show returns None.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from kdlab.io import atomic_write_bytes
from kdlab.report.collect import ReportData
from kdlab.runs import ACCURACY_PLOT, ARMS, plot_path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, folder: Path, name: str) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    data = buf.getvalue()
    path = plot_path(folder, name)
    path.parent.mkdir(exist_ok=True)
    atomic_write_bytes(path, data)
    return data


def _text(label: object, limit: int = 40) -> str:
    """A name or class label as plain figure text: ``$`` would start matplotlib's math mode (and a
    malformed formula fails the whole figure), and a label of any length keeps the layout."""
    text = " ".join(str(label).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("$", r"\$")


def _grid(n: int, width: float = 4.0, height: float = 3.2) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = _plt().subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _rows_by_arm(data: ReportData) -> dict[str, list[list[dict[str, Any]]]]:
    """arm -> one list of history rows per seed."""
    out: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for rows in data.history.values():
        for arm in data.arms:
            mine = [r for r in rows if r.get("arm") == arm]
            if mine:
                out[arm].append(mine)
    return out


ARM_TITLES = dict(zip(ARMS, ("Teacher", "Student from scratch", "Distilled student"), strict=True))


def accuracy_figure(panels: dict[str, list[list[dict[str, Any]]]]) -> Any:
    """Training (solid, circles) vs validation (dashed, squares) accuracy per epoch: one panel per
    title in ``panels``, one pair of lines per list of history rows (a seed). A training curve far
    above its validation curve is over-fitting."""
    fig, axes = _grid(len(panels))
    for ax, (title, runs) in zip(axes, panels.items(), strict=True):
        for i, rows in enumerate(runs):
            epochs = [r["epoch"] for r in rows]
            first = i == 0
            train = [100 * r["train_accuracy"] for r in rows]
            ax.plot(epochs, train, "o-", color="C0", alpha=0.8, label="training" if first else None)
            if all("val_accuracy" in r for r in rows):
                val = [100 * r["val_accuracy"] for r in rows]
                ax.plot(epochs, val, "s--", color="C1", alpha=0.8, label="validation" if first else None)
        ax.set_title(_text(title))
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig


def accuracy_curves(data: ReportData) -> bytes | None:
    """``accuracy_curves.png`` (the report's): :func:`accuracy_figure` for every arm and seed."""
    by_arm = _rows_by_arm(data)
    if not by_arm:
        return None
    return _save(accuracy_figure(by_arm), data.folder, "accuracy_curves")


def plot_accuracy(run_dir: Path, history_rows: list[dict[str, Any]]) -> Path | None:
    """``plots/accuracy.png`` (a lab run's): :func:`accuracy_figure` for its teacher, scratch and
    distilled arms. Arms with no history (a teacher loaded from a checkpoint) get no panel."""
    panels = {
        title: [mine] for arm, title in ARM_TITLES.items() if (mine := [r for r in history_rows if r["arm"] == arm])
    }
    if not panels:
        return None
    _save(accuracy_figure(panels), Path(run_dir), "accuracy")
    return Path(run_dir) / ACCURACY_PLOT


def loss_parts(data: ReportData) -> bytes | None:
    """``loss_parts.png``: the objective's parts per epoch (CE on labels, KD term, total) for each
    student arm, averaged over seeds."""
    by_arm = {a: runs for a, runs in _rows_by_arm(data).items() if a != "teacher"}
    if not by_arm:
        return None
    fig, axes = _grid(len(by_arm))
    for ax, (arm, runs) in zip(axes, by_arm.items(), strict=True):
        for key, style in (("train_ce", "-"), ("train_kd", "--"), ("train_loss", ":")):
            per_epoch: dict[int, list[float]] = defaultdict(list)
            for rows in runs:
                for r in rows:
                    if key in r:
                        per_epoch[int(r["epoch"])].append(float(r[key]))
            if per_epoch and not (key == "train_loss" and "train_kd" not in runs[0][0]):
                epochs = sorted(per_epoch)
                ax.plot(
                    epochs,
                    [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs],
                    style,
                    marker="o",
                    label={"train_ce": "CE (labels)", "train_kd": "KD term", "train_loss": "total"}[key],
                )
        ax.set_title(_text(arm))
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, data.folder, "loss_parts")


def tradeoff(data: ReportData) -> bytes | None:
    """``tradeoff.png``: test accuracy (mean, 95 % interval bars when there are several seeds)
    against parameters and against latency per batch of 32."""
    arms = {a: s for a, s in data.arms.items() if s.get("mean") is not None}
    if not arms:
        return None
    fig, axes = _plt().subplots(1, 2, figsize=(10, 3.8))
    for ax, key, xlabel in (
        (axes[0], "params", "parameters (log scale)"),
        (axes[1], "latency_ms_per_batch32", "latency per batch of 32 (ms, log scale)"),
    ):
        for i, (arm, s) in enumerate(arms.items()):
            x = s.get("metrics", {}).get(key, {}).get("mean")
            if x is None:
                continue
            y = 100 * s["mean"]
            err = None
            if s.get("ci95_low") is not None:
                err = [[y - 100 * s["ci95_low"]], [100 * s["ci95_high"] - y]]
            ax.errorbar([x], [y], yerr=err, fmt="o", capsize=4, color=f"C{i}", label=_text(arm))
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, data.folder, "tradeoff")


def confusion_matrices(data: ReportData) -> bytes | None:
    """``confusion.png``: one confusion matrix per arm (rows true, columns predicted), summed over
    seeds, counts written in the cells when there are at most 12 classes."""
    mats = {a: m for a in data.arms if (m := data.confusion(a)) is not None}
    if not mats:
        return None
    fig, axes = _grid(len(mats), width=3.6, height=3.4)
    for ax, (arm, m) in zip(axes, mats.items(), strict=True):
        ax.imshow(m, cmap="Blues")
        k = len(m)
        if k <= 12:
            top = max(max(row) for row in m) or 1
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        str(m[i][j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if m[i][j] > top / 2 else "black",
                    )
        ticks = list(range(k)) if k <= 12 else []
        names = data.classes[:k] if len(data.classes) >= k and k <= 12 else [str(t) for t in ticks]
        labels = [_text(c, 16) for c in names]
        ax.set_xticks(ticks, labels, fontsize=7)
        ax.set_yticks(ticks, labels, fontsize=7)
        ax.set_title(_text(arm))
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    fig.tight_layout()
    return _save(fig, data.folder, "confusion")


FIGURES = (
    ("Accuracy curves (training vs validation)", accuracy_curves),
    ("Loss parts per epoch", loss_parts),
    ("Accuracy vs size and latency", tradeoff),
    ("Confusion matrices (test set)", confusion_matrices),
)
