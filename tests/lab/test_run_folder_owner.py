"""The run folder has one owner: ``kdlab.runs`` knows its file names and reads and writes its files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import kdlab.runs as runs
from kdlab.config import load_experiment
from kdlab.errors import KdlabError

SRC = Path(__file__).resolve().parents[2] / "src" / "kdlab"
OWNERS = {SRC / "runs.py", SRC / "records.py"}
NAMES = {
    runs.RESULTS_FILE,
    runs.HISTORY_FILE,
    runs.CONFIG_FILE,
    runs.ENV_FILE,
    runs.COMPARISON_FILE,
    runs.COMPARISON_CSV,
    runs.VOCAB_FILE,
    runs.REPORT_FILE,
    runs.PLOTS_DIR,
    runs.ACCURACY_PLOT,
    "accuracy.png",
}
TINY = ["name=tiny", "teacher.model=mlp-teacher", "teacher.epochs=1", "student.epochs=1", "device=cpu"]


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (of the module, a class or a function)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _names_in(source: str, where: str) -> list[str]:
    """The string literals of ``source`` (docstrings aside) that name a run-folder file."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value.strip("/' ")
            if text in NAMES or text.startswith("seed-"):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_but_runs_and_records_names_a_run_folder_file() -> None:
    files = sorted(p for p in SRC.rglob("*.py") if p not in OWNERS)
    assert files, "no sources found"
    found = [hit for p in files for hit in _names_in(p.read_text(encoding="utf-8"), str(p.relative_to(SRC)))]
    assert not found, "use the constants and readers of kdlab.runs:\n" + "\n".join(found)


def test_the_check_sees_paths_and_messages_but_not_docstrings() -> None:
    source = '''"""Reads results.json."""
def f(run_dir, s):
    """Writes ``env.json``."""
    a = run_dir / "results.json"
    b = run_dir / "plots" / "accuracy.png"
    c = f"{run_dir}/seed-{s}/config.resolved.yaml"
'''
    hits = sorted(_names_in(source, "x.py"))
    assert hits == [
        "x.py:4: 'results.json'",
        "x.py:5: 'accuracy.png'",
        "x.py:5: 'plots'",
        "x.py:6: '/config.resolved.yaml'",
        "x.py:6: '/seed-'",
    ]


def test_old_import_paths_name_the_same_objects() -> None:
    from kdlab.data import text
    from kdlab.lab import compare, recovery, run
    from kdlab.report import render
    from kdlab.train import reproduce

    assert run.ARMS is runs.ARMS == ("teacher", "scratch", "distilled")
    assert run.WEIGHT_FILES is runs.WEIGHT_FILES and run.PROJECTORS_FILE == runs.PROJECTORS_FILE
    assert run._WeightFiles is runs._WeightFiles
    assert runs.WEIGHT_FILES["kd:temperature=8"] == "student-kd_temperature_8.safetensors"
    assert compare.COMPARISON_FILE == "comparison.json" and text.VOCAB_FILE == "vocab.json"
    assert render.REPORT_FILE == "report.html" and runs.ACCURACY_PLOT == "plots/accuracy.png"
    assert reproduce.repro_info is runs.repro_info and recovery.note_resume is runs.note_resume


def test_write_env_holds_the_run_and_the_reproducibility_info(tmp_path: Path) -> None:
    runs.write_env(tmp_path, torch.device("cpu"), 7, True)
    env = runs.read_env(tmp_path)
    assert env == runs.read_env(tmp_path / runs.ENV_FILE) == runs.read_run_env(tmp_path)
    assert env["seed"] == 7 and env["device"] == "cpu" and env["deterministic"] is True
    assert set(runs.repro_info(True)) <= set(env) and set(runs.env_info(torch.device("cpu"), 7)) <= set(env)
    runs.note_resume(tmp_path, ["kdlab", "run", "--resume", "x"])
    assert runs.read_env(tmp_path)["resumes"][0]["argv"][-1] == "x"
    assert runs.read_run_env(tmp_path / "nothing") == {}


def test_config_is_written_and_read_back_validated(tmp_path: Path) -> None:
    cfg = load_experiment("digits", TINY)
    assert not runs.has_config(tmp_path) and runs.read_config_text(tmp_path) == ""
    runs.write_config(tmp_path, cfg.model_dump(mode="json"))
    assert runs.has_config(tmp_path)
    assert runs.read_config(tmp_path) == cfg
    assert "mlp-teacher" in runs.read_config_text(tmp_path)
    (tmp_path / runs.CONFIG_FILE).write_text("seed: -1\n")
    with pytest.raises(KdlabError, match="damaged"):
        runs.read_config(tmp_path)
    with pytest.raises(KdlabError, match="start a new comparison"):
        runs.read_config(tmp_path, hint="start a new comparison")


def test_comparison_files_one_reader_one_writer(tmp_path: Path) -> None:
    with pytest.raises(KdlabError, match=r"has no comparison\.json"):
        runs.read_comparison(tmp_path)
    record = {"kind": "comparison", "status": "complete", "seeds": [0], "methods": {}, "arms": {}}
    runs.write_comparison_files(tmp_path, record, ["arm", "seed"], [{"arm": "teacher", "seed": 0, "other": 1}])
    assert runs.is_comparison(tmp_path) and runs.read_comparison(tmp_path) == record
    assert (tmp_path / runs.COMPARISON_CSV).read_text() == "arm,seed\nteacher,0\n"
    (tmp_path / runs.COMPARISON_FILE).write_text(json.dumps({**record, "kind": "run"}))
    with pytest.raises(KdlabError, match="not a kdlab comparison file"):
        runs.read_comparison(tmp_path)


def test_compare_env_json_holds_the_reproducibility_info(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison folder's env.json is the lab's: written by the same ``write_env``."""
    from kdlab.lab import compare

    cfg = load_experiment("digits", [*TINY, "deterministic=true"])
    monkeypatch.setattr(compare, "check_inputs", lambda *a, **k: None)
    monkeypatch.setattr(compare, "run_lab", lambda *a, **k: None)  # the folder's own files only
    comp_dir = compare.run_comparison(cfg, "kd", 1, out=tmp_path)
    env = runs.read_env(comp_dir)
    want = set(runs.repro_info(True)) | set(runs.env_info(torch.device("cpu"), 0))
    assert want <= set(env)
    assert env["deterministic"] is True and env["seed"] == cfg.seed
    assert {"packages", "env", "cudnn_benchmark", "interop_threads"} <= set(env)
    assert runs.read_comparison(comp_dir)["status"] == "complete"
    assert runs.read_config(comp_dir) == cfg
