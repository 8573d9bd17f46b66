"""``kdlab tune`` on digits with tiny models: files, best.yaml, resume, a killed search, pruning,
no test evaluation during the search, CLI errors."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from clihelp import TINY_COMPARE, assert_one_line_error, run_cli

from kdlab.config import load_experiment
from kdlab.config.schema import DistillConfig, ExperimentConfig
from kdlab.data.bundle import build_data
from kdlab.errors import RunInterrupted
from kdlab.lab import run as lab_run
from kdlab.lab.run import LabSession
from kdlab.lab.tune import STUDY_NAME, run_tune
from kdlab.runs import read_config
from kdlab.train import loop

pytestmark = pytest.mark.e2e  # whole searches: `pytest -m "not e2e"` skips them

TINY = [*TINY_COMPARE, "student.epochs=2"]


def tiny(*extra: str) -> ExperimentConfig:
    return load_experiment("digits", [*TINY, *extra])


def study_of(tune_dir: Path) -> optuna.Study:
    url = f"sqlite:///{(tune_dir / 'study.db').resolve().as_posix()}"
    return optuna.load_study(study_name=STUDY_NAME, storage=url)


def trials_csv(tune_dir: Path) -> list[dict[str, str]]:
    with (tune_dir / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def snapshot(tune_dir: Path) -> dict[int, tuple[Any, ...]]:
    """Trial number -> (state, params, value, start, end): what must not change on resume."""
    return {
        t.number: (t.state, t.params, t.value, t.datetime_start, t.datetime_complete) for t in study_of(tune_dir).trials
    }


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The arms :meth:`LabSession.fit_student` trains (one entry per trial actually run)."""
    calls: list[str] = []
    real = LabSession.fit_student

    def counted(self: LabSession, arm: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(arm)
        return real(self, arm, *args, **kwargs)

    monkeypatch.setattr(LabSession, "fit_student", counted)
    return calls


def fingerprint(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[tuple[str, str]]]]:
    """One search of 3 trials and a 2-seed comparison, with every evaluation recorded: which
    inputs each ``predict`` read, every test-scoring ``LabSession.record``, and when the final
    comparison started."""
    from kdlab.lab import compare

    events: list[tuple[str, str]] = []
    real_predict, real_record, real_compare = loop.predict, LabSession.record, compare.run_comparison

    def predict(model: Any, loader: Any) -> Any:
        x = getattr(loader, "x", None)
        events.append(("predict", fingerprint(x) if isinstance(x, torch.Tensor) else "?"))
        return real_predict(model, loader)

    def record(self: LabSession, arm: str, *args: Any, **kwargs: Any) -> Any:
        events.append(("record", arm))
        return real_record(self, arm, *args, **kwargs)

    def run_comparison(*args: Any, **kwargs: Any) -> Any:
        events.append(("comparison", ""))
        return real_compare(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "predict", predict)  # validation every epoch (run_epochs)
        mp.setattr(lab_run, "predict", predict)  # test scoring (LabSession.record, teacher_arm)
        mp.setattr(LabSession, "record", record)
        mp.setattr(compare, "run_comparison", run_comparison)
        tune_dir = run_tune(tiny(), trials=3, seeds=2, out=tmp_path_factory.mktemp("tune"))
    yield tune_dir, events


def test_tune_writes_study_trials_best_yaml_and_comparison(watched: tuple[Path, list[tuple[str, str]]]) -> None:
    tune_dir, _ = watched
    record = json.loads((tune_dir / "tune.json").read_text())
    assert record["kind"] == "tune" and record["status"] == "complete"
    assert record["methods"] == ["kd", "dkd", "dist"] and record["trials"] == 3 and record["seeds"] == 2
    rows = trials_csv(tune_dir)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} <= {"COMPLETE", "PRUNED"} and all(r["value"] for r in rows)
    study = study_of(tune_dir)
    best = study.best_trial
    assert float(max(rows, key=lambda r: float(r["value"]))["value"]) == pytest.approx(best.value)
    assert record["best"]["number"] == best.number and record["best"]["value"] == pytest.approx(best.value)
    # best.yaml is a runnable experiment whose distill section is exactly the best trial's settings
    best_cfg = load_experiment(str(tune_dir / "best.yaml"))
    settings = best.user_attrs["settings"]
    assert best_cfg.distill.method == best.params["method"] == settings["method"]
    for key, value in settings.items():
        assert getattr(best_cfg.distill, key) == value, key
        if isinstance(value, float):  # rounded to 3 significant digits from what the sampler drew
            assert value == pytest.approx(best.params[key], rel=5e-3, abs=1e-9)
    assert best_cfg.distill == DistillConfig.model_validate(record["best"]["distill"])
    assert best_cfg.model_dump(exclude={"distill"}) == tiny().model_dump(exclude={"distill"})
    # the comparison: best.yaml's experiment, the best arm against scratch over 2 seeds, with its report
    comp_dir = tune_dir / record["comparison"]["folder"]
    comp = json.loads((comp_dir / "comparison.json").read_text())
    assert comp["status"] == "complete" and comp["seeds"] == [0, 1]
    assert list(comp["methods"]) == [record["best"]["arm"]] and (comp_dir / "report.html").is_file()
    assert read_config(comp_dir).distill == best_cfg.distill
    assert record["verdict"]["arm"] == record["best"]["arm"] and record["verdict"]["sentence"]
    # the trial's value is the validation accuracy at the epoch train.select (best-val) picks: the
    # comparison's seed 0 (same teacher, same initial weights) trains the same student again
    with (comp_dir / "seed-0" / "history.csv").open() as f:
        hist = [r for r in csv.DictReader(f) if r["arm"] == record["best"]["arm"]]
    assert len(hist) == 2
    assert max(float(r["val_accuracy"]) for r in hist) == pytest.approx(best.value, abs=1e-6)
    assert (tune_dir / "teacher.safetensors").is_file() and not (tune_dir / "search" / "checkpoints").exists()


def test_search_never_evaluates_on_test(watched: tuple[Path, list[tuple[str, str]]]) -> None:
    _, events = watched
    data = build_data(tiny().data, 0)
    test_fp, val_fp = fingerprint(data.test.x), fingerprint(data.val.x)
    assert ("comparison", "") in events
    start = events.index(("comparison", ""))
    search, comparison = events[:start], events[start:]
    assert not [e for e in search if e[0] == "record"], "an arm was scored on test during the search"
    assert ("predict", test_fp) not in search
    # the watch sees what it should: validation after every epoch of the teacher and of 3 trials × 2
    # epochs, and the comparison's seed 0 (the same split) scoring on test
    assert sum(e == ("predict", val_fp) for e in search) == 1 + 3 * 2
    assert ("predict", test_fp) in comparison and ("record", "scratch") in comparison


def test_resume_continues_the_study_without_rerunning_trials_or_the_teacher(tmp_path: Path, fits: list[str]) -> None:
    first = run_tune(tiny(), trials=2, seeds=1, out=tmp_path)
    assert fits == ["trial-0", "trial-1"]
    before = snapshot(first)
    fits.clear()
    events: list[tuple[str, str]] = []
    resumed = run_tune(
        None,
        resume=first,
        trials=4,
        log=lambda m: events.append(("log", m)),
        progress=lambda arm: events.append(("progress", arm)),  # type: ignore[func-returns-value]
    )
    assert resumed == first
    after = snapshot(first)
    finished = [
        n for n, t in after.items() if t[0] in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    assert finished == [0, 1, 2, 3]
    assert {n: after[n] for n in before} == before  # params, values, start and end times unchanged
    assert fits == ["trial-2", "trial-3"]  # only the new trials trained
    assert after[2][1] != after[0][1]  # the resumed sampler does not redraw the first trials' settings
    search = events[: next((i for i, e in enumerate(events) if e[1].startswith(("comparing", "comparison"))), None)]
    assert ("progress", "teacher") not in search  # the search teacher was loaded, not trained again
    assert ("log", f"teacher: loaded {first / 'teacher.safetensors'}") in search
    assert any(e[1].startswith("teacher cache hit") for e in search)
    assert len(trials_csv(first)) == 4
    assert json.loads((first / "tune.json").read_text())["trials"] == 4
    # resuming a finished search with no --trials: nothing to train, the comparison is not redone
    fits.clear()
    run_tune(None, resume=first)
    assert fits == []


def test_a_killed_search_resumes_without_rerunning_finished_trials(tmp_path: Path, fits: list[str]) -> None:
    # Ctrl-C during trial 1: the stop request arrives at its first step
    with pytest.raises(RunInterrupted) as info:
        run_tune(tiny(), trials=2, seeds=1, out=tmp_path, stop=lambda: len(fits) >= 2)
    tune_dir = Path(str(info.value.run_dir))
    assert json.loads((tune_dir / "tune.json").read_text())["status"] == "interrupted"
    assert not [p for p in tune_dir.iterdir() if p.name.endswith("-compare")]
    # then a kill -9 in the middle of the next trial: optuna's record of it stays RUNNING
    study = study_of(tune_dir)
    killed = study.ask()
    killed.suggest_categorical("method", ["kd", "dkd", "dist"])
    (tune_dir / "search" / "checkpoints" / f"trial-{killed.number}").mkdir(parents=True)
    before = snapshot(tune_dir)
    assert before[0][0] == optuna.trial.TrialState.COMPLETE and before[1][0] == optuna.trial.TrialState.FAIL
    assert before[2][0] == optuna.trial.TrialState.RUNNING
    fits.clear()
    lines: list[str] = []
    run_tune(None, resume=tune_dir, log=lines.append)  # --trials: the recorded 2
    after = snapshot(tune_dir)
    assert after[0] == before[0] and after[1] == before[1]
    assert after[2][0] == optuna.trial.TrialState.FAIL  # the killed trial: marked FAIL, not counted
    assert after[3][0] == optuna.trial.TrialState.COMPLETE and len(after) == 4
    assert fits == ["trial-3"]
    assert "trial 2: left unfinished by an interrupted search; marked FAIL (not counted)" in lines
    assert [r["state"] for r in trials_csv(tune_dir)] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert not (tune_dir / "search" / "checkpoints").exists()
    assert json.loads((tune_dir / "tune.json").read_text())["status"] == "complete"


class PruneOddTrials(optuna.pruners.BasePruner):
    """Prunes every odd-numbered trial at its first report."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return trial.number % 2 == 1


def test_pruned_trials_count_as_finished_and_trials_csv_says_so(tmp_path: Path, fits: list[str]) -> None:
    tune_dir = run_tune(tiny("student.epochs=3"), trials=3, seeds=1, out=tmp_path, pruner=PruneOddTrials())
    rows = trials_csv(tune_dir)
    assert [(r["state"], r["epochs"]) for r in rows] == [("COMPLETE", "3"), ("PRUNED", "1"), ("COMPLETE", "3")]
    assert fits == ["trial-0", "trial-1", "trial-2"]  # the pruned trial counts: no fourth trial
    pruned = study_of(tune_dir).trials[1]
    assert float(rows[1]["value"]) == pytest.approx(pruned.intermediate_values[1])
    assert json.loads((tune_dir / "tune.json").read_text())["best"]["number"] in (0, 2)


def test_cli_tune_runs_and_refuses_bad_input_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sets = [w for s in TINY for w in ("--set", s)]
    out = tmp_path / "runs"
    res = run_cli(
        ["tune", "digits", "--trials", "1", "--seeds", "1", "-q", "--methods", "kd", *sets, "--out", str(out)], capsys
    )
    assert res.code == 0, res.err
    (tune_dir,) = out.iterdir()
    record = json.loads((tune_dir / "tune.json").read_text())
    assert record["methods"] == ["kd"] and record["best"]["arm"].startswith("kd:alpha=")
    assert record["verdict"]["sentence"] in res.out
    assert f"tune folder: {tune_dir}" in res.out and "best setting: trial 0, kd:alpha=" in res.out
    bad_out = tmp_path / "nothing"
    for args, match in [
        (["--methods", "kd,nope"], "--methods: .*nope"),
        (["--methods", "kd:alpha=0.5"], "method names only"),
        (["--methods", "fitnet"], "fitnet needs distill.feature_pairs"),
        (["--trials", "0"], "--trials: must be >= 1"),
        (["--seeds", "0"], "--seeds: must be >= 1"),
        (["--set", "data.val_fraction=0"], "data.val_fraction: 0 leaves no validation split"),
        ([], "--trials: give the number of trials"),
    ]:
        trials = [] if "--trials" in args or not args else ["--trials", "2"]
        res = run_cli(["tune", "digits", *sets, *trials, *args, "--out", str(bad_out)], capsys)
        assert_one_line_error(res, match)
    assert not bad_out.exists()  # nothing written
    comp = tmp_path / "not-a-tune"
    comp.mkdir()
    res = run_cli(["tune", "--resume", str(comp)], capsys)
    assert_one_line_error(res, "not a tune folder")
    assert list(comp.iterdir()) == []
    res = run_cli(["tune", "--resume", str(tune_dir), "--methods", "kd,dkd"], capsys)
    assert_one_line_error(res, "a resumed study keeps its methods")
    res = run_cli(["tune", "digits", "--resume", str(tune_dir)], capsys)
    assert_one_line_error(res, "give no experiment")
