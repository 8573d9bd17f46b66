"""'Did you mean' for config keys, presets, models and methods; a data.* key the dataset would ignore is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from clihelp import assert_one_line_error, run_cli

from kdlab.config import list_presets, load_experiment
from kdlab.config.schema import DataConfig
from kdlab.data import DATASETS
from kdlab.data.bundle import COMMON_KEYS, DATASET_KEYS, check_keys
from kdlab.errors import ConfigError
from kdlab.kd.objective import Objective
from kdlab.lab.run import check_inputs
from kdlab.models import create_model


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("distill.alpah=0.5", "; did you mean distill.alpha?"),
        ("train.epochs=5", "; epochs is a key of teacher and student: did you mean teacher.epochs, student.epochs?"),
        ("train.alpha=0.3", "; alpha is a key of distill: did you mean distill.alpha?"),
        ("epochs=3", "did you mean teacher.epochs, student.epochs?"),
        ("distil.alpha=0.5", "; did you mean distill?"),
        ("data.pth=x.csv", "; did you mean data.path?"),
        ("train.augment.flip=true", "; did you mean train.augment.hflip?"),
        ("train.temprature=3", "; did you mean distill.temperature?"),
    ],
)
def test_unknown_key_suggests_the_key_meant(override: str, hint: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_experiment("digits", [override])
    msg = str(e.value)
    assert msg.endswith(hint), msg
    assert "unknown key (known keys: " in msg  # the section's keys are still listed


def test_unknown_key_with_nothing_close_lists_keys_only() -> None:
    with pytest.raises(ConfigError) as e:
        load_experiment("digits", ["zzzzqqq=1"])
    assert "did you mean" not in str(e.value)
    assert str(e.value).endswith("distill, train)")


def test_unknown_key_in_yaml_file_gets_the_hint(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("base: digits\ntrain:\n  epochs: 5\n")
    with pytest.raises(
        ConfigError, match=r"^.*exp\.yaml: train\.epochs: unknown key .*teacher\.epochs, student\.epochs"
    ):
        load_experiment(path)


@pytest.mark.parametrize(
    ("typed", "meant"), [("digit", "'digits'"), ("fashion", "'fashion-mnist'"), ("imbd", "'imdb'")]
)
def test_unknown_preset_suggests_close_names(typed: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"neither a preset nor a YAML file: did you mean {meant}"):
        load_experiment(typed)


def test_unknown_base_preset_suggests_close_names(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("base: text_csv\n")
    with pytest.raises(ConfigError, match=r"base: unknown preset 'text_csv' \(did you mean 'text-csv'\? known: "):
        load_experiment(path)


def test_model_and_method_names_get_suggestions() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'mlp-studnet': did you mean 'mlp-student'"):
        create_model("mlp-studnet", num_classes=10, input_shape=(1, 8, 8))
    # Case and underscores: the one name meant, not three loose matches.
    with pytest.raises(ConfigError, match=r"unknown model 'Lab_CNN_Teacher': did you mean 'lab-cnn-teacher'\? known"):
        create_model("Lab_CNN_Teacher", num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(ConfigError, match=r"unknown distillation method 'KD': did you mean 'kd'\? known"):
        Objective.from_method("KD", alpha=0.5)
    with pytest.raises(ConfigError, match=r"unknown distillation option temprature; did you mean temperature\? known"):
        Objective.from_method("kd", alpha=0.5, temprature=2.0)


def test_a_very_long_unknown_name_is_answered_quickly() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        create_model("x" * 200_000, num_classes=10, input_shape=(1, 8, 8))


# --------------------------------------------------------------------------------------------
# data.* keys a dataset does not read


def test_every_dataset_declares_real_keys() -> None:
    assert set(DATASET_KEYS) == set(DATASETS.names())
    fields = set(DataConfig.model_fields)
    assert fields >= COMMON_KEYS
    for keys in DATASET_KEYS.values():
        assert keys <= fields


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_every_preset_passes_the_key_check(preset: str) -> None:
    cfg = load_experiment(preset)
    check_keys(cfg.data)
    # Switching the dataset of a preset keeps working when its other keys are at their defaults.
    if preset in {"digits", "fashion-mnist", "cats-vs-dogs"}:
        check_keys(load_experiment(preset, ["data.name=digits"]).data)


@pytest.mark.parametrize(
    ("target", "overrides", "match"),
    [
        ("digits", ["data.path=reviews.csv"], r"^data\.path: the digits dataset does not read it \(it is built in\);"
         r" it is read by fashion-mnist, image-folder, text-csv, aclimdb: .*data\.name=text-csv for a \.csv"),
        ("digits", ["data.vocab_size=300"], r"^data\.vocab_size: the digits dataset does not read it; .*text-csv"),
        ("fashion-mnist", ["data.test_fraction=0.2"], r"^data\.test_fraction: the fashion-mnist dataset .*own test"),
        ("imdb", ["data.image_size=32"], r"^data\.image_size: the aclimdb dataset .* read by image-folder"),
        ("text-csv", ["data.path=x.csv", "data.cache_dir=c"], r"^data\.cache_dir: the text-csv dataset"),
    ],
)  # fmt: skip
def test_a_key_the_dataset_ignores_is_refused(target: str, overrides: list[str], match: str) -> None:
    cfg = load_experiment(target, overrides)
    with pytest.raises(ConfigError, match=match):
        check_inputs(cfg)  # a new run: refused before the data is even read


def test_a_key_set_to_its_default_or_read_is_accepted() -> None:
    check_keys(load_experiment("imdb", ["data.test_fraction=0.1", "data.image_size=224"]).data)
    check_keys(load_experiment("digits", ["data.name=text-csv", "data.path=x.csv", "data.max_len=9"]).data)
    check_keys(DataConfig(name="digits", train_limit=100, val_fraction=0.2, max_memory_gb=1.0))


def test_a_dataset_without_a_declaration_is_not_checked() -> None:
    check_keys(DataConfig(name="my-own-dataset", path=Path("anything"), vocab_size=50))


def test_cli_refuses_an_ignored_path_before_a_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cli(["run", "digits", "--out", str(tmp_path / "runs"), "--set", "data.path=reviews.csv"], capsys)
    assert_one_line_error(res, r"^error: data\.path: the digits dataset does not read it")
    assert not (tmp_path / "runs").exists()


def test_cli_suggests_the_key_meant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cli(["run", "digits", "--out", str(tmp_path / "runs"), "--set", "train.epochs=5"], capsys)
    assert_one_line_error(res, r"train\.epochs: unknown key .*did you mean teacher\.epochs, student\.epochs\?$")
    assert not (tmp_path / "runs").exists()
