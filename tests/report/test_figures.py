"""The figures' content, read from the matplotlib objects (numbers, not pixels): arms overlaid on
one accuracy axis with the selected epoch marked, a loss axis, whole-number epoch ticks, one colour
per seed, and trade-off labels that stay apart for students of one size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdlab.report import figures
from kdlab.report.collect import ReportData
from kdlab.report.render import settings_rows


def rows(arm: str, n: int, start: float, *, kd: bool = False) -> list[dict[str, Any]]:
    out = []
    for e in range(1, n + 1):
        r = {
            "arm": arm,
            "epoch": e,
            "train_accuracy": start + 0.05 * e,
            "val_accuracy": start + 0.04 * e,
            "train_loss": 5.0 - e if kd else 2.0 - 0.1 * e,
            "val_loss": 2.1 - 0.1 * e,
        }
        if kd:
            r["train_ce"] = 2.0 - 0.1 * e
        out.append(r)
    return out


@pytest.fixture(autouse=True)
def _close_all() -> Any:
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def star_xs(ax: Any) -> list[float]:
    return [float(x) for line in ax.get_lines() if line.get_marker() == "*" for x in line.get_xdata()]


def test_accuracy_figure_overlays_arms_with_selected_epoch_and_loss() -> None:
    arms = {"teacher": rows("teacher", 1, 0.6), "scratch": rows("scratch", 5, 0.2), "kd": rows("kd", 5, 0.3, kd=True)}
    selected = {"teacher": 1, "scratch": 3, "kd": 5}
    fig = figures.accuracy_figure({a: figures.Curves(r, selected[a]) for a, r in arms.items()})
    acc, loss = fig.axes[:2]
    val = {
        line.get_label(): line for line in acc.get_lines() if line.get_linestyle() == "-" and line.get_label()[0] != "_"
    }
    assert {"teacher", "scratch", "kd"} <= set(val)
    assert list(val["scratch"].get_ydata()) == pytest.approx([100 * (0.2 + 0.04 * e) for e in range(1, 6)])
    # training accuracy drawn dashed in the arm's colour
    dashed = [line for line in acc.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata()) == 5]
    assert {line.get_color() for line in dashed} == {val["scratch"].get_color(), val["kd"].get_color()}
    assert sorted(star_xs(acc)) == [1.0, 3.0, 5.0]  # one star per arm, at its selected epoch
    star_ys = sorted(float(y) for line in acc.get_lines() if line.get_marker() == "*" for y in line.get_ydata())
    assert pytest.approx(star_ys[0]) == 100 * (0.2 + 0.04 * 3)
    assert [float(t) for t in acc.get_xticks()] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert "loss" in loss.get_title().lower() or "entropy" in loss.get_ylabel()
    kd_train = [
        line for line in loss.get_lines() if line.get_linestyle() == "--" and line.get_color() == val["kd"].get_color()
    ]
    assert list(kd_train[0].get_ydata()) == pytest.approx(
        [2.0 - 0.1 * e for e in range(1, 6)]
    )  # CE part, not the objective


def test_plot_accuracy_writes_the_public_file(tmp_path: Path) -> None:
    history = rows("teacher", 2, 0.5) + rows("scratch", 3, 0.2) + rows("distilled", 3, 0.25, kd=True)
    path = figures.plot_accuracy(tmp_path, history, {"teacher": 2, "scratch": 1, "distilled": 3})
    assert path == tmp_path / "plots" / "accuracy.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.plot_accuracy(tmp_path / "none", []) is None


def test_seeds_get_their_own_colours_and_panels_share_the_accuracy_axis() -> None:
    by_arm = {
        "teacher": [(0, rows("teacher", 1, 0.7)), (1, rows("teacher", 1, 0.6))],
        "scratch": [(0, rows("scratch", 4, 0.1)), (1, rows("scratch", 4, 0.2))],
    }
    fig = figures.seeds_figure(by_arm, {"scratch": {0: 2, 1: 4}, "teacher": {0: 1, 1: 1}})
    teacher, scratch = fig.axes[:2]
    colours = {
        line.get_label(): line.get_color() for line in scratch.get_lines() if line.get_label().startswith("seed")
    }
    assert len(set(colours.values())) == 2 and set(colours) == {"seed 0", "seed 1"}
    assert teacher.get_ylim() == scratch.get_ylim()
    assert sorted(star_xs(scratch)) == [2.0, 4.0]
    assert [float(t) for t in teacher.get_xticks()] == [1.0]  # one epoch: one whole-number tick, not 0.95…1.05


def test_tradeoff_labels_every_point_and_equal_sizes_stay_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[Any] = []
    monkeypatch.setattr(figures, "_save", lambda fig, folder, name: drawn.append(fig) or b"png")

    def arm(mean: float, params: int) -> dict[str, Any]:
        return {"mean": mean, "metrics": {"params": {"mean": params}, "latency_ms_per_batch32": {"mean": 0.5}}}

    data = ReportData(
        kind="comparison",
        folder=tmp_path,
        title="t",
        arms={"teacher": arm(0.9, 100_000), "scratch": arm(0.5, 1200), "kd": arm(0.5, 1200), "dkd": arm(0.51, 1200)},
        seeds={},
        history={},
    )
    assert figures.tradeoff(data) == b"png"
    fig = drawn[0]
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        texts = {t.get_text(): t.get_window_extent() for t in ax.texts}
        assert set(texts) == {"teacher", "scratch", "kd", "dkd"}
        boxes = list(texts.values())
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert not a.overlaps(b)
    xs = [float(line.get_xdata()[0]) for line in fig.axes[0].get_lines() if line.get_marker() == "o"]
    assert len(set(xs)) == 4  # same-size students spread sideways, not drawn on top of each other
    assert fig.axes[0].get_ylim()[0] >= 0 and fig.axes[0].get_ylim()[1] <= 100


def test_settings_rows_show_each_arms_own_method() -> None:
    data = ReportData(
        kind="comparison",
        folder=Path("."),
        title="t",
        arms={},
        seeds={},
        history={},
        methods={
            "kd": {"method": "kd", "alpha": 0.5, "temperature": 4.0, "beta": 8.0},
            "dkd": {"method": "dkd", "alpha": 0.5, "temperature": 4.0, "beta": 2.0},
        },
    )
    assert settings_rows(data) == [
        {"arm": "kd", "settings": "method=kd · alpha=0.5 · temperature=4.0 · beta=8.0"},
        {"arm": "dkd", "settings": "method=dkd · alpha=0.5 · temperature=4.0 · beta=2.0"},
    ]
