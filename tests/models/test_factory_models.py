"""The user's own factories (``file.py:function``, ``module:function``): a run, predict and load_run from a
factory file outside the project; the refusal of code a run folder carries; every bad spec one line."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from clihelp import run_cli
from hostile.bounded import assert_clean_error, assert_nothing_written, run_bounded

import kdlab
from kdlab.errors import ConfigError
from kdlab.models import create_model

FACTORIES = textwrap.dedent(
    """
    from torch import nn

    CALLS = []

    def make_teacher(num_classes, input_shape):
        CALLS.append(("teacher", num_classes, input_shape))
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 48), nn.ReLU(), nn.Linear(48, num_classes))

    def make_student(**kwargs):
        CALLS.append(("student", kwargs))
        c, h, w = kwargs["input_shape"]
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, kwargs["num_classes"]))

    VALUE = 3

    def boom(num_classes):
        raise ValueError("width must be even\\nsecond line")

    def not_a_model():
        return 42
    """
)

TINY = ["--set", "device=cpu", "--set", "teacher.epochs=1", "--set", "student.epochs=1"]
TINY += ["--set", "data.train_limit=200", "-q"]


def _project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mynets.py").write_text(FACTORIES)
    return root


def test_factory_gets_only_the_arguments_it_declares(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")
    model = create_model(f"{root}/mynets.py:make_teacher", num_classes=4, input_shape=[1, 8, 8], vocab_size=9)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    module = sys.modules[next(n for n in sys.modules if n.startswith("kdlab_factory_"))]
    assert ("teacher", 4, (1, 8, 8)) in module.CALLS
    create_model(f"{root}/mynets.py:make_student", num_classes=3, input_shape=(1, 8, 8), vocab_size=None)
    assert module.CALLS[-1] == ("student", {"num_classes": 3, "input_shape": (1, 8, 8), "vocab_size": None})


def test_module_factory_imports_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _project(tmp_path / "proj")
    monkeypatch.chdir(root)
    before = list(sys.path)
    model = create_model("mynets:make_student", num_classes=2, input_shape=(1, 4, 4))
    assert sys.path == before  # the current directory was on the path for the import only
    assert isinstance(model, torch.nn.Sequential) and model[1].out_features == 2
    sys.modules.pop("mynets", None)


@pytest.fixture(scope="module")
def factory_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits run whose teacher and student are factories of a file given relative to the current directory."""
    tmp = tmp_path_factory.mktemp("factory")
    root = _project(tmp / "proj")
    import os

    from hostile.bounded import run_in_process

    old = os.getcwd()
    os.chdir(root)
    try:
        args = ["run", "digits", *TINY, "--set", "teacher.model=mynets.py:make_teacher"]
        args += ["--set", "student.model=./mynets.py:make_student", "--out", str(tmp / "runs")]
        assert run_in_process(args) == 0
    finally:
        os.chdir(old)
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir


@pytest.mark.e2e
def test_factory_run_records_absolute_paths_and_predicts(
    factory_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root = factory_run.parent.parent / "proj"
    config = yaml.safe_load((factory_run / "config.resolved.yaml").read_text())
    assert config["teacher"]["model"] == f"{root / 'mynets.py'}:make_teacher"
    assert config["student"]["model"] == f"{root / 'mynets.py'}:make_student"
    results = json.loads((factory_run / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["arms"]["distilled"]["model"] == f"{root / 'mynets.py'}:make_student"
    assert results["arms"]["teacher"]["params"] == 64 * 48 + 48 + 48 * 10 + 10
    assert results["arms"]["scratch"]["params"] == 64 * 10 + 10

    monkeypatch.chdir(tmp_path)  # elsewhere: the recorded absolute path still finds the file
    run = kdlab.load_run(factory_run)
    assert set(run.models) == {"teacher", "scratch", "distilled"}
    from sklearn.datasets import load_digits

    from kdlab.io import read_state_dict

    x = torch.tensor(load_digits().images[:5] / 16.0, dtype=torch.float32).unsqueeze(1)
    state = read_state_dict(factory_run / "student-distilled.safetensors")
    want = x.flatten(1) @ state["1.weight"].T + state["1.bias"]
    torch.testing.assert_close(run.models["distilled"](x), want)

    from PIL import Image

    img = tmp_path / "seven.png"
    Image.fromarray((load_digits().images[7] * 16).astype("uint8")).save(img)
    res = run_cli(["predict", str(factory_run), str(img), "--json"], capsys)
    assert res.code == 0, res.err
    assert json.loads(res.out)[0]["label"] in run.classes


EVIL = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('x')\n" + FACTORIES


def _record(run_dir: Path, spec: str) -> None:
    """Make the run folder name ``spec`` as its students' model (a folder someone sent)."""
    results = json.loads((run_dir / "results.json").read_text())
    for arm in ("scratch", "distilled"):
        results["arms"][arm]["model"] = spec
    (run_dir / "results.json").write_text(json.dumps(results))
    config = yaml.safe_load((run_dir / "config.resolved.yaml").read_text())
    config["student"]["model"] = spec
    (run_dir / "config.resolved.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.e2e
@pytest.mark.parametrize("recorded", ["inside", "relative", "module"])
def test_code_inside_a_run_folder_is_never_run(
    factory_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    recorded: str,
) -> None:
    sent = tmp_path / "sent-run"
    shutil.copytree(factory_run, sent)
    (sent / "evil.py").write_text(EVIL.replace("make_student", "make"))
    (sent / "evilmod.py").write_text(EVIL.replace("make_student", "make"))
    spec = {"inside": f"{sent}/evil.py:make", "relative": "evil.py:make", "module": "evilmod:make"}[recorded]
    _record(sent, spec)
    monkeypatch.chdir(sent)  # the worst case: the user stands in the folder
    res = run_cli(["predict", str(sent), str(sent / "x.png")], capsys)
    assert res.code == 2 and "Traceback" not in res.err
    (line,) = [ln for ln in res.err.splitlines() if ln.strip()]
    assert line.startswith("error: student.model: ")
    assert ("relative path" in line) if recorded == "relative" else ("names code inside the run folder" in line)
    with pytest.raises(ConfigError):
        kdlab.load_run(sent, arms=["distilled"])
    res = run_cli(["export", str(sent)], capsys)
    assert res.code == 2
    assert not (sent / "RAN").exists()  # nothing the folder carries was executed
    assert "evilmod" not in sys.modules


def _bad(spec: str, *, key: str = "student.model") -> list[str]:
    return ["--set", f"{key}={spec}"]


BAD_SPECS: dict[str, tuple[list[str], str]] = {
    "file missing": (_bad("{proj}/nope.py:make"), r"student\.model: factory file .*nope\.py does not exist"),
    "module missing": (_bad("no_such_module_kdlab:make"), r"student\.model: no module named 'no_such_module_kdlab'"),
    "function missing": (_bad("{proj}/mynets.py:nothing"), r"student\.model: .*mynets\.py has no function 'nothing'"),
    "not callable": (_bad("{proj}/mynets.py:VALUE"), r"student\.model: 'VALUE' in .* is a int, not a function"),
    "factory raising": (
        _bad("{proj}/mynets.py:boom"),
        r"student\.model: factory '.*:boom' raised ValueError: width must be even$",
    ),
    "not a module returned": (_bad("{proj}/mynets.py:not_a_model"), r"student\.model: .* returned int, not a torch"),
    "file that fails to run": (_bad("{proj}/broken.py:make", key="teacher.model"), r"teacher\.model: running .*broken"),
    "unknown timm name": (_bad("timm:resnt18", key="teacher.model"), r"teacher\.model: timm has no model 'resnt18'"),
    "unknown registered name": (_bad("lab-cnn-studnt"), r"unknown model 'lab-cnn-studnt': did you mean"),
    "pretrained registered": (["--set", "teacher.pretrained=true"], r"teacher\.pretrained: only timm: and hf:"),
    "config of a non-hf": (["--set", "student.config={num_hidden_layers: 2}"], r"student\.config: overrides apply"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_line_exit_2_nothing_written(case: str, tmp_path: Path) -> None:
    proj = _project(tmp_path / "proj")
    (proj / "broken.py").write_text("def make(:\n")
    sets, match = BAD_SPECS[case]
    sets = [s.replace("{proj}", str(proj)) for s in sets]
    res = run_bounded(["run", "digits", *TINY, *sets, "--out", str(tmp_path / "runs")], cwd=tmp_path)
    assert_clean_error(res, match)
    assert_nothing_written(tmp_path)
    assert not (tmp_path / "runs").exists()
