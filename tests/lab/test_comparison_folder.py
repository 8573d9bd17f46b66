"""A comparison folder is first-class: an interrupted `kdlab compare` resumes with the printed command
and its recorded settings (no extra seed); `show` prints the comparison; `predict` / `export` name
the seed runs and the exact command instead of failing on a missing results.json."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from clihelp import TINY_COMPARE

from kdlab.lab import recovery

pytestmark = pytest.mark.e2e  # whole (tiny) lab runs: `pytest -m "not e2e"` skips them

TINY = TINY_COMPARE


def cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``kdlab ARGV`` in-process: exit status, stdout, stderr."""
    from kdlab import cli as kdlab_cli

    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["kdlab", *argv])
    try:
        kdlab_cli.main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def stop_when(condition: Callable[[], bool]) -> type[recovery.StopOnSignal]:
    """A StopOnSignal that acts as if SIGTERM arrived once ``condition()`` holds."""

    class Stop(recovery.StopOnSignal):
        def __call__(self) -> bool:
            if self.signum is None and condition():
                self.signum = signal.SIGTERM
            return self.signum is not None

    return Stop


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """`kdlab compare digits --seeds 2 --set … -q` stopped while seed 1 trains, then the printed resume command."""
    from kdlab import cli as kdlab_cli

    out = tmp_path_factory.mktemp("cmp")
    record: dict[str, object] = {}
    with pytest.MonkeyPatch.context() as mp:

        def main(argv: list[str]) -> int:
            mp.setattr(sys, "argv", ["kdlab", *argv])
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    kdlab_cli.main()
            except SystemExit as e:
                return int(e.code or 0)
            return 0

        err = io.StringIO()
        mp.setattr(kdlab_cli, "err_console", kdlab_cli.Console(file=err, width=400))
        mp.setattr(recovery, "StopOnSignal", stop_when(lambda: any(out.glob("*/seed-1"))))
        sets = [a for s in TINY for a in ("--set", s)]
        record["interrupted_code"] = main(["compare", "digits", "--seeds", "2", *sets, "--out", str(out), "-q"])
        (folder,) = out.iterdir()
        record["folder"] = folder
        record["before"] = json.loads((folder / "comparison.json").read_text())
        line = next(ln for ln in err.getvalue().splitlines() if "resume with:" in ln)
        record["command"] = command = shlex.split(line.split("resume with:", 1)[1])
        mp.setattr(recovery, "StopOnSignal", stop_when(lambda: False))
        record["resumed_code"] = main([*command[1:], "-q"])
    return record


def test_interrupted_compare_prints_a_complete_resume_command_that_trains_no_extra_seed(
    resumed: dict[str, object],
) -> None:
    folder = resumed["folder"]
    assert isinstance(folder, Path)
    assert resumed["interrupted_code"] == 143  # SIGTERM
    assert resumed["command"] == ["kdlab", "compare", "--resume", str(folder)]  # no experiment, --set, --seeds
    before = resumed["before"]
    assert isinstance(before, dict)
    assert before["status"] == "running" and before["seeds"] == [0, 1]
    assert resumed["resumed_code"] == 0
    comp = json.loads((folder / "comparison.json").read_text())
    assert comp["status"] == "complete"
    assert comp["seeds"] == [0, 1] and sorted(p.name for p in folder.glob("seed-*")) == ["seed-0", "seed-1"]
    assert list(comp["methods"]) == ["kd"] and comp["arms"]["kd"]["n"] == 2
    # the recorded --set options were kept: the resumed seed trained the tiny teacher on 300 samples
    res_1 = json.loads((folder / "seed-1" / "results.json").read_text())
    assert res_1["arms"]["teacher"]["model"] == "mlp-teacher" and res_1["data"]["train"] == 300


def test_resume_takes_the_recorded_settings_and_only_adds_what_is_given(resumed: dict[str, object]) -> None:
    from kdlab.lab.compare import resume_comparison

    folder = resumed["folder"]
    assert isinstance(folder, Path)
    trained: list[str] = []
    logged: list[str] = []
    # the same seeds and methods as recorded (a count starts at the first recorded seed): nothing to do
    resume_comparison(folder, methods="kd", seeds=2, progress=trained.append, log=logged.append)
    resume_comparison(folder, progress=trained.append, log=logged.append)
    assert trained == [] and not any(m.startswith("adding") for m in logged)
    assert json.loads((folder / "comparison.json").read_text())["seeds"] == [0, 1]


def test_resume_adds_a_seed_only_when_asked_and_says_so(resumed: dict[str, object], tmp_path: Path) -> None:
    import shutil

    from kdlab.lab.compare import resume_comparison

    folder = tmp_path / "c"
    shutil.copytree(resumed["folder"], folder)  # type: ignore[arg-type]
    trained: list[str] = []
    logged: list[str] = []
    resume_comparison(folder, seeds=3, progress=trained.append, log=logged.append)
    assert trained == ["teacher", "scratch", "kd"]  # seed 2's cells only
    assert f"adding seed(s) 2 to {folder}" in logged
    assert json.loads((folder / "comparison.json").read_text())["seeds"] == [0, 1, 2]


def test_show_prints_the_comparison_and_its_seed_runs(
    resumed: dict[str, object], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = resumed["folder"]
    assert isinstance(folder, Path)
    code, out, err = cli(["show", str(folder)], monkeypatch, capsys)
    assert (code, err) == (0, "")
    flat = " ".join(out.split())
    assert "seeds [0, 1]" in flat and "Δ vs scratch" in flat
    kd_row = next(ln for ln in out.splitlines() if ln.strip("│ ").startswith("kd "))
    assert " 2 " in kd_row  # n = 2 seeds
    assert f"seed runs in {folder}: seed-0, seed-1" in flat
    assert "has no results.json" not in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["predict", "{c}", "a.png", "b c.png"], "kdlab predict {c}/seed-0 a.png 'b c.png' --arm kd"),
        (["predict", "{c}", "x", "--arm", "scratch", "--json"], "kdlab predict {c}/seed-0 x --arm scratch --json"),
        (["export", "{c}"], "kdlab export {c}/seed-0 --arm kd"),
        (["export", "{c}", "--arm", "teacher", "-o", "m.onnx"], "kdlab export {c}/seed-0 --arm teacher --out m.onnx"),
    ],
)
def test_predict_and_export_on_a_comparison_folder_name_the_seed_runs_and_the_command(
    argv: list[str],
    expected: str,
    resumed: dict[str, object],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = resumed["folder"]
    assert isinstance(folder, Path)
    code, out, err = cli([a.replace("{c}", str(folder)) for a in argv], monkeypatch, capsys)
    assert code == 2 and out == ""
    line = " ".join(err.split())  # rich may wrap a long line on a narrow terminal
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"{folder} is a comparison folder (seed runs: seed-0, seed-1)" in line
    assert line.endswith(expected.replace("{c}", str(folder)))
    assert not (folder / "export").exists()


def test_the_python_api_refuses_a_comparison_folder_with_the_same_line(resumed: dict[str, object]) -> None:
    from kdlab.apps.predict import load_run
    from kdlab.errors import KdlabError

    folder = resumed["folder"]
    assert isinstance(folder, Path)
    with pytest.raises(KdlabError, match=r"is a comparison folder .* e\.g\. kdlab predict .*seed-0 INPUT… --arm kd$"):
        load_run(folder)
    load_run(folder / "seed-1", arms=["kd"])  # a seed folder is a run folder
