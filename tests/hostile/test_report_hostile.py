"""Hostile corpus: report.html shows every recorded string as text, never as markup, and the
JSON records stay standard JSON whatever numbers a run produces.

* Markup in a run name, the command line, a config string, a data path, class folder names, a
  folder name and a hand-edited results.json is escaped in report.html: checked in the rendered
  text and in headless Chromium (no script runs, no dialog opens, the markup reads as text).
* NaN and ±inf (an eval pass that gives a non-finite logit, with ``train.nonfinite=skip-batch``)
  are written as ``null`` in results.json and in the checkpoint JSON, listed under
  ``"nonfinite"``; strict parsers read every file; ``kdlab show`` and ``kdlab report`` read them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bounded import assert_clean_error, run_bounded, run_in_process
from browser import CHROMIUM, CHROMIUM_ARGS
from PIL import Image

from kdlab.models.registry import MODELS
from kdlab.report.render import write_report

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = ["--set", "device=cpu", "--set", "teacher.model=mlp-teacher", "--set", "teacher.epochs=1"]
TINY += ["--set", "student.epochs=1", "--set", "data.train_limit=100", "-q"]

SCRIPT = "<script>window.__pwned=1;document.title='pwned'</script>"
IMG = "<img src=x onerror=window.__pwned=2>"
# Where each payload goes in (how the run or a later edit put it there).
PAYLOADS = {
    "run name": "<script>window.__pwned=3</script>",
    "command line": "<img src=x onerror=window.__pwned=4>",  # the --out folder: only env.json's argv has it
    "config string": "<script>window.__pwned=5</script>",  # in data.cache_dir (a key image folders read)
    "data path": "<img src=x onerror=window.__pwned=6>",
    "class label": "<img src=x onerror=window.__pwned=7>",
    "model name (edited results.json)": SCRIPT,
    "arm name with quotes (edited results.json)": 'x" onmouseover="window.__pwned=8" data-x="',
    "env value (edited env.json)": "</pre><script>window.__pwned=9</script><pre>",
    "folder name": IMG,
}
# Class folder names: markup, a formula matplotlib's math mode cannot parse, quotes and ampersands.
CLASSES = [PAYLOADS["class label"], "$\\frac{$", "a\"b'c&d"]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny image-folder run whose name, command line, config, data path and class folders hold
    markup; then its results.json and env.json edited to hold more, and the folder renamed to markup."""
    tmp = tmp_path_factory.mktemp("hostile-report")
    root = tmp / PAYLOADS["data path"]
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (8, 8), (40 * c, 20 * i, 90)).save(root / cls / f"{i}.png")
    args = ["run", "digits", *TINY, "--set", "data.name=image-folder", "--set", f"data.path={root}"]
    args += ["--set", "data.image_size=8", "--set", f"name={PAYLOADS['run name']}"]
    args += ["--set", f"data.cache_dir={tmp / 'cache'}/{PAYLOADS['config string']}"]
    args += ["--out", str(tmp / PAYLOADS["command line"])]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDLAB_CACHE", str(tmp / "cache"))
        assert run_in_process(args) == 0
    (run,) = (tmp / PAYLOADS["command line"]).iterdir()
    res = json.loads((run / "results.json").read_text())
    assert res["name"] == PAYLOADS["run name"] and res["data"]["classes"] == sorted(CLASSES)
    res["arms"]["teacher"]["model"] = PAYLOADS["model name (edited results.json)"]
    res["arms"] = {
        PAYLOADS["arm name with quotes (edited results.json)"] if a == "scratch" else a: e
        for a, e in res["arms"].items()
    }
    (run / "results.json").write_text(json.dumps(res))
    env = json.loads((run / "env.json").read_text())
    env["platform"] = PAYLOADS["env value (edited env.json)"]
    (run / "env.json").write_text(json.dumps(env))
    return run.rename(run.parent / PAYLOADS["folder name"])


@pytest.fixture(scope="module")
def hostile_report(hostile_run: Path) -> Path:
    return write_report(hostile_run)


def _escaped(text: str) -> str:
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("'", "&#39;")):
        text = text.replace(raw, entity)
    return text


@pytest.mark.parametrize("field", [f for f in PAYLOADS if f != "class label"])
def test_report_escapes_markup_from_every_source(field: str, hostile_report: Path) -> None:
    html = hostile_report.read_text(encoding="utf-8")
    payload = PAYLOADS[field]
    assert _escaped(payload) in html, f"{field}: not in the page as text"
    assert payload not in html, f"{field}: in the page as markup"


def test_report_has_no_markup_but_its_own(hostile_report: Path) -> None:
    html = hostile_report.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<img src=x" not in html and 'onmouseover="' not in html
    assert html.count("<img ") == 4  # the four figures; no payload became an element


def test_class_labels_are_plain_figure_text(hostile_report: Path) -> None:
    """A class named ``$\\frac{$`` would make matplotlib parse a formula and fail the figure (and
    with it the report); every figure is drawn."""
    plots = hostile_report.parent / "plots"
    assert {"confusion.png", "accuracy_curves.png", "accuracy.png"} <= {p.name for p in plots.iterdir()}


def test_hostile_report_runs_no_script_in_headless_chromium(hostile_report: Path) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.skip("no Chromium installed (Debian: apt-get install chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    dialogs: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(hostile_report.as_uri(), wait_until="load")
            page.mouse.move(200, 300)  # an injected onmouseover would fire
            page.wait_for_timeout(100)
            pwned = page.evaluate("() => window.__pwned === undefined ? null : String(window.__pwned)")
            title = page.title()
            text = page.evaluate("() => document.body.innerText")
            scripts = page.evaluate("() => document.scripts.length")
        finally:
            browser.close()
    assert pwned is None and dialogs == [] and scripts == 0
    assert title.startswith("kdlab report — <script>window.__pwned=3</script>")
    for field, payload in PAYLOADS.items():
        if field != "class label":  # drawn in the confusion figure only
            assert payload in text, f"{field}: does not read as text"
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []  # no <img src=x> fetched


# ---------------------------------------------------------------------------------- strict JSON


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


class _NaNEval(torch.nn.Module):
    """mlp-teacher whose eval forward gives NaN logits for the first sample of each batch; its
    training forward from call ``stop_after`` on gives NaN for the whole batch."""

    def __init__(self, inner: torch.nn.Module, stop_after: int | None) -> None:
        super().__init__()
        self.inner, self.stop_after, self.calls = inner, stop_after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if not self.training:
            out = out.clone()
            out[0] = float("nan")
        else:
            self.calls += 1
            if self.stop_after is not None and self.calls > self.stop_after:
                out = out * float("nan")
        return out


@pytest.fixture(scope="module")
def nonfinite_models() -> Iterator[dict[str, str]]:
    from kdlab.models.vision import mlp_teacher

    names = {"nan": "test-eval-nan", "stops": "test-eval-nan-then-all-nan"}
    MODELS.add(names["nan"], lambda **kw: _NaNEval(mlp_teacher(**kw), None))
    # 100 training samples at batch 64: two steps per epoch; every batch of epoch 2 is NaN
    MODELS.add(names["stops"], lambda **kw: _NaNEval(mlp_teacher(**kw), 2))
    yield names
    for name in names.values():
        MODELS._items.pop(name)


def _nonfinite_run(tmp: Path, model: str, *extra: str) -> list[str]:
    args = ["run", "digits", *TINY, "--set", f"teacher.model={model}", "--set", "train.nonfinite=skip-batch"]
    return [*args, "--set", "train.batch_size=64", *extra, "--out", str(tmp / "runs")]


def test_nonfinite_results_are_standard_json_and_read_back(nonfinite_models: dict[str, str], tmp_path: Path) -> None:
    res = run_bounded(_nonfinite_run(tmp_path, nonfinite_models["nan"]), timeout=60)
    assert res.code == 0 and "Traceback" not in res.err, res.err[-2000:]
    (run,) = (tmp_path / "runs").iterdir()
    results = _strict((run / "results.json").read_text())
    assert results["status"] == "complete"
    flagged = results["nonfinite"]
    assert flagged["/arms/teacher/test_loss"] == "NaN" and results["arms"]["teacher"]["test_loss"] is None
    for pointer in flagged:  # every listed value is a null in place
        node: Any = results
        for token in pointer.split("/")[1:]:
            node = node[int(token)] if isinstance(node, list) else node[token]
        assert node is None, pointer
    assert ",nan," in (run / "history.csv").read_text()  # CSV keeps the float's own text
    show = run_bounded(["show", str(run)], timeout=30)
    assert show.code == 0 and "Traceback" not in show.err
    teacher_row = next(line for line in show.out.splitlines() if "teacher" in line)
    assert teacher_row.split("│")[3].strip() in ("nan", "—")  # the test loss: NaN read back, or null as a dash
    report = run_bounded(["report", str(run)], timeout=60)
    assert report.code == 0 and "Traceback" not in report.err, report.err[-2000:]


def test_a_failed_arms_checkpoint_json_is_standard_json_and_gives_its_nan_back(
    nonfinite_models: dict[str, str], tmp_path: Path
) -> None:
    """Epoch 2 of the teacher skips every batch: the arm stops, its epoch-1 checkpoint is kept. The
    checkpoint's history holds the NaN validation loss as null (listed); loading it gives NaN back."""
    args = _nonfinite_run(tmp_path, nonfinite_models["stops"], "--set", "teacher.epochs=2")
    assert_clean_error(run_bounded(args, timeout=60), match=r"teacher arm: all 2 batches of the epoch had a non-finite")
    (run,) = (tmp_path / "runs").iterdir()
    assert _strict((run / "results.json").read_text())["status"] == "failed"
    folder = run / "checkpoints" / "teacher"
    texts = {p.name: p.read_text() for p in folder.glob("*.json")}
    assert set(texts) == {"latest.json", "epoch-0001.json"}
    meta = _strict(texts["epoch-0001.json"])
    assert meta["history"][0]["val_loss"] is None and meta["nonfinite"]["/history/0/val_loss"] == "NaN"

    from kdlab.models.registry import create_model
    from kdlab.train.checkpoint import ArmCheckpoint
    from kdlab.train.loop import make_optimizer

    model = create_model(nonfinite_models["stops"], num_classes=10, input_shape=(1, 8, 8))
    state = ArmCheckpoint(folder, "teacher").load(model, make_optimizer(list(model.parameters())))
    assert state.epoch == 1 and np.isnan(state.history[0]["val_loss"])


NAN, INF = float("nan"), float("inf")
# record -> the "nonfinite" map strict_json must give it
STRICT = {
    "NaN in a list": ({"a": [1.0, NAN]}, {"/a/1": "NaN"}),
    "+inf and -inf": ({"x": {"hi": INF, "lo": -INF}}, {"/x/hi": "Infinity", "/x/lo": "-Infinity"}),
    "keys with / and ~ (JSON Pointer escapes)": ({"kd:t=0.5/x~": NAN}, {"/kd:t=0.5~1x~0": "NaN"}),
    "a numpy float": ({"v": np.float64("nan")}, {"/v": "NaN"}),
    "nothing to flag": ({"v": 1.5, "s": "NaN"}, None),
}


@pytest.mark.parametrize("case", list(STRICT))
def test_strict_json_writes_null_and_lists_it(case: str, tmp_path: Path) -> None:
    from kdlab.io import atomic_write_json, restore_nonfinite

    record, flagged = STRICT[case]
    atomic_write_json(tmp_path / "r.json", record)
    back = _strict((tmp_path / "r.json").read_text())
    assert back.get("nonfinite") == flagged
    restored = restore_nonfinite(back)
    assert "nonfinite" not in restored
    assert json.dumps(restored, sort_keys=True) == json.dumps(record, sort_keys=True)  # nan == nan as text


def test_rewriting_a_record_read_back_keeps_its_nonfinite_list(tmp_path: Path) -> None:
    """results.json is read, changed and written again on resume: the notes of values still null stay."""
    from kdlab.io import atomic_write_json

    atomic_write_json(tmp_path / "r.json", {"arms": {"t": {"loss": NAN}, "s": {"loss": INF}}})
    record = _strict((tmp_path / "r.json").read_text())
    record["arms"]["s"]["loss"] = 0.5  # a value that is a number again loses its note
    record["status"] = "complete"
    atomic_write_json(tmp_path / "r.json", record)
    assert _strict((tmp_path / "r.json").read_text())["nonfinite"] == {"/arms/t/loss": "NaN"}
