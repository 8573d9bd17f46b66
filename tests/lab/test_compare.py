"""Multi-seed comparison on digits with tiny models: files, statistics, resume, CLI errors."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from clihelp import TINY_COMPARE

from kdlab.config import load_experiment
from kdlab.config.schema import DistillConfig
from kdlab.errors import ConfigError, KdlabError
from kdlab.lab.compare import parse_methods, resolve_seeds, run_comparison
from kdlab.report import stats

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = TINY_COMPARE
ARM_KEYS = {"n", "mean", "std", "ci95_low", "ci95_high", "values", "seeds", "metrics"}
DIFF_KEYS = {"n", "mean", "std", "ci95_low", "ci95_high", "p_value", "values", "seeds"}


@pytest.fixture(scope="module")
def comparison(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_experiment("digits", TINY)
    return run_comparison(cfg, "kd", 2, out=tmp_path_factory.mktemp("cmp"))


def recorder() -> tuple[list[str], Callable[[str], None]]:
    """A progress factory that records which arms start training (one call per trained arm)."""
    trained: list[str] = []
    return trained, lambda arm: trained.append(arm)


def test_comparison_json_has_documented_keys_and_consistent_numbers(comparison: Path) -> None:
    comp = json.loads((comparison / "comparison.json").read_text())
    assert comp["kind"] == "comparison" and comp["status"] == "complete"
    assert comp["seeds"] == [0, 1] and list(comp["methods"]) == ["kd"]
    assert list(comp["arms"]) == ["teacher", "scratch", "kd"]
    per_seed = [json.loads((comparison / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    for arm, entry in comp["arms"].items():
        assert set(entry) >= ARM_KEYS
        expected = [r["arms"][arm]["test_accuracy"] for r in per_seed]
        assert entry["values"] == expected and entry["n"] == 2 and entry["seeds"] == [0, 1]
        assert entry["mean"] == pytest.approx(sum(expected) / 2)
        assert entry["ci95_low"] <= entry["mean"] <= entry["ci95_high"]
        assert {"ece", "params", "size_bytes", "latency_ms_per_batch32"} <= set(entry["metrics"])
    diff = comp["arms"]["kd"]["diff_vs_scratch"]
    assert set(diff) >= DIFF_KEYS
    want = [r["arms"]["kd"]["test_accuracy"] - r["arms"]["scratch"]["test_accuracy"] for r in per_seed]
    assert diff["values"] == pytest.approx(want)
    ref = stats.paired_difference(comp["arms"]["kd"]["values"], comp["arms"]["scratch"]["values"])
    assert diff["p_value"] == ref["p_value"]
    assert "diff_vs_scratch" not in comp["arms"]["scratch"]
    # per-arm metrics recorded in every seed's results.json
    kd0 = per_seed[0]["arms"]["kd"]
    assert 0 <= kd0["teacher_agreement"] <= 1 and kd0["kl_to_teacher"] >= 0 and 0 <= kd0["ece"] <= 1
    assert sum(map(sum, kd0["confusion_matrix"])) == per_seed[0]["data"]["test"]
    assert "teacher_agreement" not in per_seed[0]["arms"]["teacher"]
    # scratch and distilled students start from the same weights: same size, same parameter count
    assert kd0["params"] == per_seed[0]["arms"]["scratch"]["params"]


def test_comparison_csv_one_row_per_arm_and_seed(comparison: Path) -> None:
    with (comparison / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["arm"], r["seed"]) for r in rows] == [(a, s) for s in ("0", "1") for a in ("teacher", "scratch", "kd")]
    comp = json.loads((comparison / "comparison.json").read_text())
    kd = [float(r["test_accuracy"]) for r in rows if r["arm"] == "kd"]
    assert kd == pytest.approx(comp["arms"]["kd"]["values"])


def test_resume_skips_finished_cells_and_retrains_only_missing_ones(comparison: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "c"
    shutil.copytree(comparison, folder)
    cfg = load_experiment("digits", TINY)
    weights = sorted(folder.glob("seed-*/*.safetensors"))
    mtimes = {p: p.stat().st_mtime_ns for p in weights}
    trained, progress = recorder()

    run_comparison(cfg, "kd", 2, resume=folder, progress=progress)  # everything finished: nothing retrained
    assert trained == []
    assert {p: p.stat().st_mtime_ns for p in weights} == mtimes

    # an interrupted cell: seed 1's kd arm never got recorded
    results_1 = folder / "seed-1" / "results.json"
    res = json.loads(results_1.read_text())
    kd_before = res["arms"].pop("kd")["test_accuracy"]
    results_1.write_text(json.dumps(res))
    # --out pointing at a comparison folder resumes it too, and finishes all of its seeds
    run_comparison(cfg, "kd", 1, out=folder, progress=progress)
    assert trained == ["kd"]  # seed 1's kd cell only
    redone = json.loads(results_1.read_text())["arms"]["kd"]["test_accuracy"]
    assert redone == kd_before  # same initial weights, same data order: the cell is reproduced exactly

    # a method added later trains only its own cells; the earlier arms stay in the comparison
    trained.clear()
    run_comparison(cfg, "kd:temperature=2", 2, resume=folder, progress=progress)
    assert trained == ["kd:temperature=2", "kd:temperature=2"]
    comp = json.loads((folder / "comparison.json").read_text())
    assert list(comp["arms"]) == ["teacher", "scratch", "kd", "kd:temperature=2"]
    assert comp["methods"]["kd:temperature=2"]["temperature"] == 2.0


def test_resume_refuses_a_different_experiment(comparison: Path) -> None:
    cfg = load_experiment("digits", [*TINY, "train.lr=0.01"])
    with pytest.raises(KdlabError, match=r"differs .* at 'train.lr'"):
        run_comparison(cfg, "kd", 2, resume=comparison)


def test_method_specs_and_seed_counts_are_validated() -> None:
    base = DistillConfig()
    specs = parse_methods("kd, kd:temperature=8:alpha=0.5", base)
    assert [s.arm for s in specs] == ["kd", "kd:temperature=8:alpha=0.5"]
    assert (specs[1].distill.temperature, specs[1].distill.alpha, specs[1].distill.method) == (8.0, 0.5, "kd")
    with pytest.raises(ConfigError, match=r"unknown distillation method 'kdd'.*did you mean 'kd'"):
        parse_methods("kdd", base)
    with pytest.raises(ConfigError, match="temperature"):
        parse_methods("kd:temperature=-1", base)
    with pytest.raises(ConfigError, match="twice"):
        parse_methods("kd,kd", base)
    assert resolve_seeds(3, 5) == [5, 6, 7]


def test_method_settings_take_yaml_mappings_and_lists() -> None:
    """``-m 'fitnet:feature_pairs={a: b}'``: a colon or comma inside braces belongs to the value."""
    specs = parse_methods(
        "kd,fitnet:feature_pairs={layer1.0: layer2, conv: body.3}:feature_weight=2,dkd", DistillConfig()
    )
    assert [s.distill.method for s in specs] == ["kd", "fitnet", "dkd"]
    fitnet = specs[1].distill
    assert fitnet.feature_pairs == {"layer1.0": "layer2", "conv": "body.3"}
    assert fitnet.feature_weight == 2.0
    with pytest.raises(ConfigError, match="feature_pairs"):
        parse_methods("fitnet:feature_pairs=[a, b]", DistillConfig())


def test_method_specific_settings_of_the_experiment_go_only_to_methods_that_take_them() -> None:
    """The lab presets' ``t_squared: false`` is Hinton KD without T²: kd and logit-std (kd on
    standardized logits) inherit it; dkd and dist, which always scale by T², keep the default and
    say so; set on the arm itself it is refused as in an experiment file."""
    from kdlab.lab.run import check_inputs

    base = DistillConfig(t_squared=False, standardize=False)
    specs = {s.arm: s for s in parse_methods("kd,logit-std,dkd,dist", base)}
    assert {a: s.distill.t_squared for a, s in specs.items()} == {
        "kd": False,
        "logit-std": False,
        "dkd": True,
        "dist": True,
    }
    assert specs["kd"].notes == specs["logit-std"].notes == ()
    assert specs["dist"].notes == (
        "dist: distill.t_squared=false from the experiment does not apply to dist; this arm uses t_squared=true",
    )
    std = {s.arm: s for s in parse_methods("kd,dist", DistillConfig(standardize=True))}
    assert std["kd"].distill.standardize and not std["dist"].distill.standardize
    explicit = parse_methods("dist:t_squared=false", base)[0]
    assert explicit.notes == () and explicit.distill.t_squared is False
    with pytest.raises(ConfigError, match=r"t_squared=false applies to kd only"):
        check_inputs(load_experiment("digits", TINY), {explicit.arm: explicit.distill})
    with pytest.raises(ConfigError, match="--seeds: must be >= 1"):
        resolve_seeds(0)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["compare", "digits", "--methods", "nope", "--seeds", "2"], "unknown distillation method 'nope'"),
        (["compare", "digits", "--methods", "kd", "--seeds", "0"], "--seeds: must be >= 1"),
        (["report", "{tmp}"], "has no results.json or comparison.json"),
        (["export", "{tmp}", "--format", "tflite"], "unknown export format 'tflite'"),
        (["compare", "digits", "--resume", "{tmp}"], "not a comparison folder"),
        (["compare", "digits", "--set", "student.model=nope", "--out", "{tmp}"], "unknown model 'nope'"),
    ],
)
def test_cli_bad_inputs_exit_2_with_one_line(
    argv: list[str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdlab import cli

    monkeypatch.setattr(sys, "argv", ["kdlab", *[a.replace("{tmp}", str(tmp_path)) for a in argv]])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_compare_prints_table_and_keeps_results_when_the_report_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kdlab import cli
    from kdlab.report import render

    def broken(folder: Path) -> Path:
        raise RuntimeError("disk full")

    monkeypatch.setattr(render, "write_report", broken)
    sets = [a for s in TINY for a in ("--set", s)]
    argv = ["kdlab", "compare", "digits", "--methods", "kd", "--seeds", "1", *sets, "--out", str(tmp_path), "-q"]
    monkeypatch.setattr(sys, "argv", argv)
    cli.main()  # returns normally: exit status 0
    out, err = capsys.readouterr()
    (folder,) = tmp_path.iterdir()
    assert f"comparison folder: {folder}" in out.replace("\n", "")
    assert "kd" in out and "one seed: no spread" in out
    assert "warning: report.html not written (RuntimeError: disk full)" in err
    comp = json.loads((folder / "comparison.json").read_text())
    assert comp["status"] == "complete" and comp["arms"]["kd"]["n"] == 1
    assert not (folder / "report.html").exists()


def test_teacher_checkpoint_is_loaded_not_trained(comparison: Path, tmp_path: Path) -> None:
    trained, progress = recorder()
    ckpt = comparison / "seed-0" / "teacher.safetensors"
    cfg = load_experiment("digits", TINY)
    folder = run_comparison(cfg, "kd", [0], out=tmp_path, teacher_checkpoint=ckpt, progress=progress)
    assert trained == ["scratch", "kd"]
    res = json.loads((folder / "seed-0" / "results.json").read_text())
    original = json.loads((comparison / "seed-0" / "results.json").read_text())
    assert res["arms"]["teacher"]["source"] == str(ckpt)
    assert res["arms"]["teacher"]["test_accuracy"] == original["arms"]["teacher"]["test_accuracy"]


def test_show_lists_every_method_arm_of_a_seed_folder(comparison: Path) -> None:
    from rich.console import Console

    from kdlab.report.table import print_results
    from kdlab.runs import read_results

    res = read_results(comparison / "seed-0")
    console = Console(record=True, width=160)
    print_results(res, console)
    text = console.export_text()
    kd_row = next(line for line in text.splitlines() if line.startswith("│ kd "))
    gain = 100 * (res["arms"]["kd"]["test_accuracy"] - res["arms"]["scratch"]["test_accuracy"])
    assert f"{gain:+.2f}" in kd_row


def test_load_run_and_predict_reach_a_compared_method_arm(comparison: Path) -> None:
    """A seed folder's method arm (``kd``) loads like a lab arm and classifies like its recorded
    test accuracy says; an arm that is not in the folder is a one-line error naming the arms."""
    import torch

    from kdlab import load_run
    from kdlab.data.bundle import build_data
    from kdlab.data.tensors import prepare_inputs

    run = load_run(comparison / "seed-0")
    assert set(run.models) == {"teacher", "scratch", "kd"}
    cfg = run.config
    test = build_data(cfg.data, seed=cfg.seed).test
    with torch.no_grad():
        acc = (run.model("kd")(prepare_inputs(test.x)).argmax(1) == test.y).float().mean().item()
    assert acc == pytest.approx(run.results["arms"]["kd"]["test_accuracy"], abs=1e-6)
    with pytest.raises(ConfigError, match=r"'distilled' is not an arm of .* \(arms: teacher, scratch, kd\)"):
        load_run(comparison / "seed-0", arms=["distilled"])


def test_load_run_refuses_weights_named_outside_the_run_folder(comparison: Path, tmp_path: Path) -> None:
    """results.json names each arm's weights file; a path that leaves the run folder is refused."""
    import shutil

    from kdlab import load_run

    seed = tmp_path / "seed-0"
    shutil.copytree(comparison / "seed-0", seed)
    res = json.loads((seed / "results.json").read_text())
    res["arms"]["kd"]["weights"] = "../seed-0/student-kd.safetensors"  # the very same file, reached from outside
    (seed / "results.json").write_text(json.dumps(res))
    with pytest.raises(KdlabError, match=r"arm 'kd' names weights outside the run folder"):
        load_run(seed)
    assert set(load_run(seed, arms=["scratch"]).models) == {"scratch"}
