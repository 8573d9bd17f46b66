"""Model specs: the parsing rule, registered names built exactly as before, options a kind does not
take refused by name, `kdlab models` naming every kind, and no heavy import for a registered model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clihelp import run_cli

from kdlab.errors import ConfigError
from kdlab.models import create_model
from kdlab.models.common import MODELS
from kdlab.models.specs import Declared, absolute_spec, declared_inputs, parse_spec


@pytest.mark.parametrize(
    ("spec", "kind", "target"),
    [
        ("lab-cnn-student", "registered", "lab-cnn-student"),
        ("lab-cnn-studnt", "registered", "lab-cnn-studnt"),  # a typo: the registry's did-you-mean
        ("timm:resnet18", "timm", "resnet18"),
        ("timm:resnet18.a1_in1k", "timm", "resnet18.a1_in1k"),
        ("hf:./models/bert", "hf", "./models/bert"),
        ("hf:prajjwal1/bert-tiny", "hf", "prajjwal1/bert-tiny"),
        ("mymodels:make", "factory", "mymodels:make"),
        ("pkg.sub.mod:build_net", "factory", "pkg.sub.mod:build_net"),
        ("nets.py:make", "factory", "nets.py:make"),
        ("/abs/dir with space/nets.py:make", "factory", "/abs/dir with space/nets.py:make"),
        ("../up/nets.py:make", "factory", "../up/nets.py:make"),
        ("hf-hub:timm/resnet18", "registered", "hf-hub:timm/resnet18"),  # not a module name
        ("mymodels:", "registered", "mymodels:"),  # no function
        ("my-models:make", "registered", "my-models:make"),  # not a module name
        ("dir/nets:make", "registered", "dir/nets:make"),  # a path without .py
    ],
)
def test_spec_parsing(spec: str, kind: str, target: str) -> None:
    parsed = parse_spec(spec, key="student.model")
    assert (parsed.kind, parsed.target, parsed.text) == (kind, target, spec)


def test_registered_name_wins_over_the_spec_rule() -> None:
    MODELS.add("team:net", lambda **kw: torch.nn.Linear(4, kw["num_classes"]))
    try:
        assert parse_spec("team:net", key="teacher.model").kind == "registered"
        assert create_model("team:net", num_classes=3, input_shape=(4,)).out_features == 3
    finally:
        MODELS._items.pop("team:net")


@pytest.mark.parametrize("name", ["lab-cnn-student", "mlp-teacher", "text-cnn-teacher"])
def test_registered_models_are_built_exactly_as_by_their_factory(name: str) -> None:
    shape = (200,) if name.startswith("text") else (1, 8, 8)
    torch.manual_seed(5)
    direct = MODELS.get(name)(num_classes=10, input_shape=shape, vocab_size=50)
    torch.manual_seed(5)
    built = create_model(name, num_classes=10, input_shape=shape, vocab_size=50, key="teacher.model")
    assert list(built.state_dict()) == list(direct.state_dict())
    assert all(
        torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values(), strict=True)
    )


def test_unknown_name_keeps_the_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"^unknown model 'lab-cnn-studnt': did you mean 'lab-cnn-student'"):
        create_model("lab-cnn-studnt", num_classes=2, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match=r"unknown model 'hf-hub:x/y'.*or a model spec: .*timm:<name>"):
        create_model("hf-hub:x/y", num_classes=2, input_shape=(1, 8, 8))


@pytest.mark.parametrize("spec", ["timm:", "hf:", "hf:  "])
def test_a_prefix_without_a_name_is_one_line(spec: str) -> None:
    with pytest.raises(ConfigError, match=r"^teacher\.model: .* names no model after"):
        parse_spec(spec, key="teacher.model")


def test_options_a_kind_does_not_take_are_refused_by_key() -> None:
    with pytest.raises(ConfigError, match=r"^student\.pretrained: only timm: and hf: models"):
        create_model("mlp-student", num_classes=2, input_shape=(1, 8, 8), pretrained=True, key="student.model")
    with pytest.raises(ConfigError, match=r"^student\.config: overrides apply to hf: models only"):
        create_model("timm:test_resnet", num_classes=2, input_shape=(1, 8, 8), config={"a": 1}, key="student.model")


def test_declared_inputs_of_models_that_declare_nothing(tmp_path: Path) -> None:
    assert declared_inputs("lab-cnn-teacher", pretrained=False, has_checkpoint=True, key="teacher.model") == Declared()
    assert declared_inputs(f"{tmp_path}/m.py:f", pretrained=False, has_checkpoint=False, key="t").is_empty()
    with pytest.raises(ConfigError, match="unknown model"):
        declared_inputs("no-such-model", pretrained=False, has_checkpoint=False, key="teacher.model")


def test_absolute_spec_makes_only_factory_files_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_spec("nets/m.py:make", key="k") == f"{tmp_path}/nets/m.py:make"
    assert absolute_spec("../m.py:make", key="k") == f"{tmp_path.parent}/m.py:make"
    for spec in ("mymodels:make", "timm:resnet18", "hf:./bert", "mlp-student", "/abs/m.py:make"):
        assert absolute_spec(spec, key="k") == spec


def test_kdlab_models_names_every_spec_kind(capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cli(["models"], capsys)
    assert res.code == 0
    assert "lab-cnn-teacher" in res.out and "mlp-student" in res.out
    for example in ("timm:resnet18", "hf:./my-bert", "mymodels:make_student", "models/net.py:build"):
        assert example in res.out
    assert "runs your code" in res.out


def test_a_registered_model_imports_no_timm_or_transformers() -> None:
    code = (
        "import sys; from kdlab.models import create_model; "
        "create_model('lab-cnn-student', num_classes=10, input_shape=(1, 8, 8)); "
        "print(sorted(m for m in ('timm', 'transformers', 'torchvision', 'tokenizers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
