"""The report's figures (matplotlib, Agg backend), for any set of arms and seeds.

Each function draws one figure from :class:`~kdlab.report.collect.ReportData`, saves it as
``plots/<name>.png`` in the reported folder (atomically) and returns the PNG bytes, which the
HTML report embeds. A figure with nothing to show returns None.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from dataclasses import dataclass
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


def _integer_epochs(ax: Any) -> None:
    """Whole-number epoch ticks: every epoch drawn when there are at most 12, else a whole-number locator."""
    from matplotlib.ticker import MaxNLocator

    epochs = sorted({float(x) for line in ax.get_lines() for x in line.get_xdata()})
    if 0 < len(epochs) <= 12:
        ax.set_xticks(epochs, [str(int(e)) for e in epochs])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _selected_point(rows: list[dict[str, Any]], epoch: Any, key: str) -> tuple[float, float] | None:
    """(epoch, value in %) of the history row at the selected epoch, None when it is not recorded."""
    if not isinstance(epoch, int | float):
        return None
    for r in rows:
        if r.get("epoch") == epoch and isinstance(r.get(key), int | float):
            return float(epoch), 100 * float(r[key])
    return None


def _mark_selected(ax: Any, rows: list[dict[str, Any]], epoch: Any, color: str, label: str | None) -> None:
    point = _selected_point(rows, epoch, "val_accuracy")
    if point is not None:
        ax.plot([point[0]], [point[1]], "*", color=color, markersize=14, markeredgecolor="black", zorder=5, label=label)


def _curves(ax_acc: Any, ax_loss: Any, rows: list[dict[str, Any]], label: str, color: str, selected: Any) -> None:
    """One run of one arm: validation (solid) and training (dashed) accuracy and loss, a star at the
    selected epoch."""
    epochs = [r["epoch"] for r in rows]
    if all(isinstance(r.get("val_accuracy"), int | float) for r in rows):
        ax_acc.plot(epochs, [100 * r["val_accuracy"] for r in rows], "o-", color=color, label=label)
    ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in rows], "--", color=color, alpha=0.6)
    _mark_selected(ax_acc, rows, selected, color, None)
    if ax_loss is None:
        return
    if all(isinstance(r.get("val_loss"), int | float) for r in rows):
        ax_loss.plot(epochs, [r["val_loss"] for r in rows], "o-", color=color, label=label)
    # a distilled arm's train_loss is its whole objective (CE and KD term): its CE part is the comparable curve
    key = "train_ce" if all(isinstance(r.get("train_ce"), int | float) for r in rows) else "train_loss"
    if all(isinstance(r.get(key), int | float) for r in rows):
        ax_loss.plot(epochs, [r[key] for r in rows], "--", color=color, alpha=0.6)


def _style(ax: Any, ylabel: str, title: str, *, selected: bool = True) -> None:
    """Title, labels, grid, epoch ticks, and a legend of the coloured lines followed by the line
    styles' meaning (solid validation, dashed training, star the selected epoch)."""
    from matplotlib.lines import Line2D

    ax.set_title(_text(title, 60))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    _integer_epochs(ax)
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    handles += [Line2D([], [], color="gray", ls="-"), Line2D([], [], color="gray", ls="--")]
    labels += ["validation", "training"]
    if selected:
        handles.append(Line2D([], [], ls="", marker="*", color="gray", markeredgecolor="black", markersize=12))
        labels.append("selected epoch")
    ax.legend(handles, labels, fontsize="small", loc="best")


@dataclass(frozen=True)
class Curves:
    """One arm's history rows and the epoch its result was taken from (None: not recorded)."""

    rows: list[dict[str, Any]]
    selected: int | None = None


def accuracy_figure(arms: dict[str, Curves]) -> Any:
    """The arms of one run on shared axes: left, validation accuracy (solid, circles) and training
    accuracy (dashed) of every arm, a star at each arm's selected epoch; right, validation and
    training loss. ``arms`` maps a label to its curves. A training curve far above its validation
    curve is over-fitting."""
    fig, (ax_acc, ax_loss) = _plt().subplots(1, 2, figsize=(11, 4.2))
    for i, (label, curves) in enumerate(arms.items()):
        _curves(ax_acc, ax_loss, curves.rows, _text(label, 24), f"C{i}", curves.selected)
    _style(ax_acc, "accuracy (%)", "Accuracy per epoch (solid: validation, dashed: training)")
    _style(ax_loss, "cross-entropy on labels", "Loss per epoch (solid: validation, dashed: training)", selected=False)
    fig.tight_layout()
    return fig


def seeds_figure(
    by_arm: dict[str, list[tuple[int, list[dict[str, Any]]]]], selected: dict[str, dict[int, Any]] | None = None
) -> Any:
    """One panel per arm on a shared accuracy axis, one colour per seed: validation (solid) and
    training (dashed) accuracy, a star at each seed's selected epoch."""
    selected = selected or {}
    fig, axes = _grid(len(by_arm))
    for ax in axes[1:]:
        ax.sharey(axes[0])
    for ax, (arm, runs) in zip(axes, by_arm.items(), strict=True):
        for i, (seed, rows) in enumerate(runs):
            _curves(ax, None, rows, f"seed {seed}", f"C{i}", selected.get(arm, {}).get(seed))
        _style(ax, "accuracy (%)", arm)
    fig.tight_layout()
    return fig


def _selected_epochs(data: ReportData) -> dict[str, dict[int, Any]]:
    """arm -> seed -> the epoch the arm's result was taken from (results.json ``selected_epoch``)."""
    out: dict[str, dict[int, Any]] = defaultdict(dict)
    for seed, res in data.seeds.items():
        for arm, entry in res.get("arms", {}).items():
            if isinstance(entry, dict):
                out[arm][seed] = entry.get("selected_epoch")
    return out


def accuracy_curves(data: ReportData) -> bytes | None:
    """``accuracy_curves.png`` (the report's): for one seed the arms overlaid (:func:`accuracy_figure`),
    for several one panel per arm with a colour per seed (:func:`seeds_figure`)."""
    by_arm: dict[str, list[tuple[int, list[dict[str, Any]]]]] = defaultdict(list)
    for seed, rows in data.history.items():
        for arm in data.arms:
            if mine := [r for r in rows if r.get("arm") == arm]:
                by_arm[arm].append((seed, mine))
    if not by_arm:
        return None
    chosen = _selected_epochs(data)
    if len(data.history) == 1:
        seed = next(iter(data.history))
        fig = accuracy_figure({arm: Curves(runs[0][1], chosen.get(arm, {}).get(seed)) for arm, runs in by_arm.items()})
    else:
        fig = seeds_figure(by_arm, chosen)
    return _save(fig, data.folder, "accuracy_curves")


def plot_accuracy(
    run_dir: Path, history_rows: list[dict[str, Any]], selected: dict[str, Any] | None = None
) -> Path | None:
    """``plots/accuracy.png`` (a lab run's): :func:`accuracy_figure` for its teacher, scratch and
    distilled arms; ``selected`` maps an arm to its selected epoch. Arms with no history (a teacher
    loaded from a checkpoint) get no curves."""
    selected = selected or {}
    arms = {arm: mine for arm in ARMS if (mine := [r for r in history_rows if r["arm"] == arm])}
    if not arms:
        return None
    fig = accuracy_figure({ARM_TITLES[a]: Curves(rows, selected.get(a)) for a, rows in arms.items()})
    _save(fig, Path(run_dir), "accuracy")
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
        _integer_epochs(ax)
        ax.legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, data.folder, "loss_parts")


def tradeoff(data: ReportData) -> bytes | None:
    """``tradeoff.png``: test accuracy (mean, 95 % interval bars when there are several seeds)
    against parameters and against latency per batch of 32. Every point is labelled with its arm;
    arms at the same x (students of one size) are spread a little sideways and their labels
    stacked, so none hides another."""
    arms = {a: s for a, s in data.arms.items() if s.get("mean") is not None}
    if not arms:
        return None
    fig, axes = _plt().subplots(1, 2, figsize=(11, 4.2))
    for ax, key, xlabel in (
        (axes[0], "params", "parameters (log scale)"),
        (axes[1], "latency_ms_per_batch32", "latency per batch of 32 (ms, log scale)"),
    ):
        points = [
            (i, arm, float(x), 100 * s["mean"], s)
            for i, (arm, s) in enumerate(arms.items())
            if isinstance(x := s.get("metrics", {}).get(key, {}).get("mean"), int | float) and x > 0
        ]
        for i, arm, x, y, s, dodge, stack, anchor in _dodged(points):
            err = None
            if s.get("ci95_low") is not None:
                err = [[y - 100 * s["ci95_low"]], [100 * s["ci95_high"] - y]]
            ax.errorbar([x * dodge], [y], yerr=err, fmt="o", capsize=4, color=f"C{i}", label=_text(arm))
            ax.annotate(
                _text(arm, 20),
                anchor,
                xytext=(6, 6 + 11 * stack),
                textcoords="offset points",
                fontsize="small",
                color=f"C{i}",
            )
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.25, y=0.2)
        low, high = ax.get_ylim()  # a 2-seed interval can reach past 0-100 %: accuracy cannot
        ax.set_ylim(max(low, 0.0), min(high, 100.0))
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return _save(fig, data.folder, "tradeoff")


def _dodged(points: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Each point with a sideways factor (log axis), a label row and the label's anchor: points whose
    x agree to 1 % are spread ±12 % around it; each label sits beside its own point, and the labels
    of points that also sit at about the same height (8 % of the plot's accuracy range) are stacked
    in rows 0, 1, 2, … above the highest of them (no two labels coincide, none sits at another arm's
    marker)."""
    groups: dict[int, list[int]] = defaultdict(list)
    for n, p in enumerate(points):
        groups[round(math.log(p[2]) / math.log(1.01))].append(n)
    ys = [p[3] for p in points]
    near = 0.08 * (max(ys) - min(ys)) + 0.05 if ys else 0.0  # "the same height" on this plot's scale
    out = []
    for n, p in enumerate(points):
        group = groups[round(math.log(p[2]) / math.log(1.01))]
        k, size = group.index(n), len(group)
        dodge = 1.12 ** (k - (size - 1) / 2) if size > 1 else 1.0
        close = [m for m in group if abs(points[m][3] - p[3]) <= near]
        anchor = (p[2] * dodge, max(points[m][3] for m in close))
        out.append((*p, dodge, close.index(n), anchor))
    return out


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
