"""Config loading: presets, YAML files, --set overrides, one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlab.config import list_presets, load_experiment
from kdlab.errors import ConfigError


def test_default_is_digits_and_presets_listed() -> None:
    cfg = load_experiment()
    assert cfg.data.name == "digits"
    assert {"digits", "fashion-mnist", "cats-vs-dogs"} <= set(list_presets())
    assert all(desc for desc in list_presets().values())


def test_lab_presets_reproduce_the_lab_hyperparameters() -> None:
    for preset in ("fashion-mnist", "cats-vs-dogs"):
        cfg = load_experiment(preset)
        assert (cfg.distill.alpha, cfg.distill.temperature, cfg.distill.t_squared) == (0.05, 5.0, False)
        assert (cfg.teacher.epochs, cfg.student.epochs, cfg.train.batch_size, cfg.train.lr) == (8, 5, 32, 1e-3)
        assert (cfg.teacher.model, cfg.student.model) == ("lab-cnn-teacher", "lab-cnn-student")
    assert load_experiment("cats-vs-dogs").data.image_size == 224


def test_precedence_defaults_yaml_set(tmp_path: Path) -> None:
    f = tmp_path / "exp.yaml"
    f.write_text("base: digits\ndistill:\n  alpha: 0.3\ntrain:\n  lr: 0.01\n")
    cfg = load_experiment(f, ["train.lr=3e-4", "distill.t_squared=false", "data.path=/x"])
    assert cfg.distill.alpha == 0.3  # from YAML
    assert cfg.train.lr == 3e-4  # --set beats YAML
    assert cfg.distill.t_squared is False
    assert str(cfg.data.path) == "/x"
    assert cfg.teacher.model == load_experiment("digits").teacher.model  # from the base preset
    assert cfg.train.batch_size == 32  # schema default


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["distill.alpha=1.5"], r"distill\.alpha: .*less than or equal to 1.*1\.5"),
        (["distill.alph=0.5"], r"distill\.alph: unknown key \(known keys: method, alpha"),
        (["student.epochs=-1"], r"student\.epochs: .*greater than or equal to 1"),
        (["distill.temperature=0"], r"distill\.temperature: .*greater than (or equal to )?0"),
        (["train.lr=fast"], r"train\.lr: .*valid number"),
        (["device=tpu"], r"device: "),
        (
            ["teacher.epochs=0"],
            r"teacher\.epochs is 0 and the teacher has no weights to start from: set teacher\.checkpoint",
        ),
        (["nonsense"], r"expected key=value"),
    ],
)
def test_bad_values_are_one_line_errors_naming_the_key(overrides: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_experiment("digits", overrides)
    assert "\n" not in str(info.value)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a preset nor a YAML file"):
        load_experiment("not-a-preset")
    with pytest.raises(ConfigError, match="no such experiment file"):
        load_experiment(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+: not valid YAML"):
        load_experiment(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_experiment(bad)
    bad.write_text("base: nope\n")
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_experiment(bad)


def test_configs_are_data_not_code(tmp_path: Path) -> None:
    f = tmp_path / "evil.yaml"
    marker = tmp_path / "pwned"
    f.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_experiment(f)
    assert not marker.exists()
