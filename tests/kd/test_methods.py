"""The distill.method registry, the objective's options and warm-up, feature methods in the
Distiller (hooks, projectors, optimizer), and a tiny end-to-end fit of every method."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import TinyNet
from torch import nn

from kdlab import Distiller
from kdlab.errors import ConfigError
from kdlab.kd import losses
from kdlab.kd.objective import METHODS, Objective

S = torch.tensor([[1.0, 2.0, 3.0, 0.5], [0.5, 0.0, -0.5, 2.0]])
T = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 3.0]])
Y = torch.tensor([2, 3])
ALL = ["kd", "dkd", "dist", "logit-std", "fitnet", "at"]


class TinyConv(nn.Module):
    """Conv(3×3) → ReLU → 2×2 average pool → Linear: feature maps to hook, in seconds."""

    def __init__(self, width: int, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(width * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.act(self.conv(x))).flatten(1))


def _pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return TinyConv(16), TinyConv(4)


# ------------------------------------------------------------------------------------------ objective
def test_objective_parts_match_the_losses() -> None:
    cases = {
        "logit-std": losses.kd_loss(S, T, temperature=2.0, standardize=True),
        "dkd": losses.dkd_loss(S, T, Y, alpha=0.5, beta=3.0, temperature=2.0, standardize=True),
        "dist": losses.dist_loss(S, T, beta=2.0, gamma=0.5, temperature=2.0),
    }
    options = {
        "logit-std": {},
        "dkd": {"dkd_alpha": 0.5, "dkd_beta": 3.0, "standardize": True},
        "dist": {"dist_beta": 2.0, "dist_gamma": 0.5},
    }
    ce = losses.cross_entropy(S, Y)
    for method, want in cases.items():
        parts = Objective.from_method(method, alpha=0.3, temperature=2.0, **options[method])(S, Y, T)
        torch.testing.assert_close(parts["kd"], want)
        torch.testing.assert_close(parts["total"], 0.3 * ce + 0.7 * want)


def test_dkd_warmup_scales_the_kd_term_linearly() -> None:
    obj = Objective.from_method("dkd", alpha=0.2, temperature=4.0, warmup_epochs=4)
    raw = losses.dkd_loss(S, T, Y, temperature=4.0)
    for epoch, scale in [(0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)]:
        obj.set_epoch(epoch)
        parts = obj(S, Y, T)
        torch.testing.assert_close(parts["kd"], scale * raw)
        torch.testing.assert_close(parts["total"], 0.2 * losses.cross_entropy(S, Y) + 0.8 * scale * raw)


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("kd", {"dkd_betta": 1.0}, "unknown distillation option dkd_betta"),
        ("dist", {"standardize": True}, "standardize applies to kd and dkd"),
        ("kd", {"feature_pairs": {"a": "b"}}, "feature_pairs is used by fitnet and at"),
        ("dkd", {"t_squared": False}, "t_squared=false applies to kd only"),
        ("fitnet", {}, "needs at least one student->teacher layer pair"),
        ("dkdd", {}, "did you mean 'dkd'"),
        ("dkd", {"warmup_epochs": -1}, "warmup_epochs"),
    ],
)
def test_bad_method_options_are_one_line_config_errors(method: str, options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        Objective.from_method(method, alpha=0.5, temperature=2.0, **options)
    assert "\n" not in str(info.value)


def test_needs_teacher_features_only_for_feature_methods() -> None:
    assert not Objective.from_method("dkd", alpha=0.5).needs_teacher_features
    assert Objective.from_method("at", alpha=0.5, feature_pairs={"a": "b"}).needs_teacher_features
    assert not Objective.from_method("at", alpha=1.0, feature_pairs={"a": "b"}).needs_teacher_features


# ------------------------------------------------------------------------------------------ feature methods
def test_fitnet_projector_in_optimizer_gets_gradient_and_teacher_none(digits_xy) -> None:
    x, y = digits_xy
    teacher, student = _pair()
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = Distiller(teacher=teacher, student=student, alpha=0.5, method="fitnet", feature_pairs={"act": "act"})
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)  # student only: the projector must be added
    d.fit((x[:96], y[:96]), epochs=1, optimizer=opt, batch_size=32)
    proj = d.kd_module.projectors["act"]  # type: ignore[union-attr]
    assert isinstance(proj, nn.Conv2d) and (proj.in_channels, proj.out_channels) == (4, 16)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert {id(p) for p in proj.parameters()} <= held
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert opt.state[proj.weight]["step"] == 3  # 96 samples / 32 = 3 steps of the projector
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before_t[k]) for k, v in teacher.state_dict().items())
    # hooks only live during fit: the student is a plain model afterwards
    assert not student.act._forward_hooks and not teacher.act._forward_hooks


def test_fitnet_on_vectors_uses_a_linear_projector_and_saves_it(digits_xy, tmp_path) -> None:
    from safetensors.torch import load_file

    x, y = digits_xy
    torch.manual_seed(0)
    teacher, student = TinyNet(hidden=32), TinyNet(hidden=8)
    d = Distiller(teacher=teacher, student=student, method="fitnet", feature_pairs={"net.2": "net.2"})
    history = d.fit((x[:64], y[:64]), epochs=1)
    assert history[0]["train_kd"] > 0
    assert isinstance(d.kd_module.projectors["net__2"], nn.Linear)  # type: ignore[union-attr]
    size = d.save_projectors(tmp_path / "p.safetensors")
    assert size == (tmp_path / "p.safetensors").stat().st_size
    assert {k: tuple(v.shape) for k, v in load_file(tmp_path / "p.safetensors").items()} == {
        "net__2.weight": (32, 8),
        "net__2.bias": (32,),
    }
    assert Distiller(teacher=TinyNet(hidden=32), student=TinyNet(hidden=8)).save_projectors(tmp_path / "n") is None


def test_at_needs_no_projector_and_equal_widths_none_either(digits_xy) -> None:
    x, y = digits_xy
    teacher, student = _pair()
    d = Distiller(teacher=teacher, student=student, method="at", feature_pairs={"conv": "conv", "act": "act"})
    d.fit((x[:64], y[:64]), epochs=1)
    assert len(d.kd_module.projectors) == 0  # type: ignore[union-attr]
    assert d.kd_parameters() == []


def test_unknown_layer_name_lists_close_names() -> None:
    teacher, student = _pair()
    with pytest.raises(ConfigError, match=r"student has no module 'actt'; close names: act") as info:
        Distiller(teacher=teacher, student=student, method="fitnet", feature_pairs={"actt": "act"})
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="teacher has no module 'head2'"):
        Distiller(teacher=teacher, student=student, method="at", feature_pairs={"act": "head2"})


def test_at_on_vectors_and_mixed_ranks_refused(digits_xy) -> None:
    x, _ = digits_xy
    teacher, student = _pair()
    with pytest.raises(ConfigError, match=r"method 'at' needs \[N, C, H, W\] maps"):
        Distiller(teacher=teacher, student=student, method="at", feature_pairs={"head": "head"}, example_input=x[:4])
    with pytest.raises(ConfigError, match=r"student 'act' .* vs teacher 'head'"):
        Distiller(teacher=teacher, student=student, method="fitnet", feature_pairs={"act": "head"}, example_input=x[:4])


def test_feature_methods_refuse_precomputed_teacher_logits(digits_xy) -> None:
    x, y = digits_xy
    teacher, student = _pair()
    d = Distiller(teacher=teacher, student=student, method="fitnet", feature_pairs={"act": "act"})
    with pytest.raises(ConfigError, match="live features"):
        d.fit((x[:32], y[:32]), epochs=1, teacher_fn=lambda batch: teacher(batch.x))


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("method", ALL)
def test_every_method_fits_one_epoch_on_digits(digits_xy, method: str) -> None:
    x, y = digits_xy
    teacher, student = _pair()
    options: dict = {"feature_pairs": {"act": "act"}} if method in {"fitnet", "at"} else {}
    if method == "dkd":
        options["warmup_epochs"] = 2
    d = Distiller(teacher=teacher, student=student, alpha=0.5, temperature=4.0, method=method, **options)
    history = d.fit((x[:128], y[:128]), val=(x[128:192], y[128:192]), epochs=1, batch_size=32)
    row = history[0]
    for key in ("train_loss", "train_ce", "train_kd", "val_loss"):
        assert torch.isfinite(torch.tensor(row[key])), (method, key, row[key])
    assert row["train_kd"] > 0
    assert row["train_loss"] == pytest.approx(0.5 * row["train_ce"] + 0.5 * row["train_kd"], rel=1e-4)


def _cli(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    from kdlab.cli import main

    monkeypatch.setattr(sys, "argv", ["kdlab", *argv])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_runs_dkd_and_fitnet_and_saves_projectors(tmp_path, monkeypatch) -> None:
    import json

    common = ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "--set", "teacher.model=mlp-teacher", "-q"]
    common += ["--set", "data.train_limit=200"]
    assert (
        _cli(["run", "digits", "--set", "distill.method=dkd", *common, "--out", str(tmp_path / "a")], monkeypatch) == 0
    )
    (run,) = (tmp_path / "a").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "complete" and results["distill"]["method"] == "dkd"
    assert results["distill"]["dkd_beta"] == 8.0
    fitnet = ["--set", "distill.method=fitnet", "--set", "distill.feature_pairs={net.2: net.2}"]
    assert _cli(["run", "digits", *fitnet, *common, "--out", str(tmp_path / "b")], monkeypatch) == 0
    (run,) = (tmp_path / "b").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["arms"]["distilled"]["projectors"] == "student-distilled.projectors.safetensors"
    assert (run / "student-distilled.projectors.safetensors").is_file()
    assert "projectors" not in results["arms"]["scratch"]


def test_cli_bad_layer_name_exits_2_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    argv = ["run", "digits", "--set", "distill.method=at", "--set", "distill.feature_pairs={net.2: features.99}"]
    argv += ["--set", "teacher.epochs=1", "--set", "student.epochs=1", "-q", "--out", str(tmp_path)]
    assert _cli(argv, monkeypatch) == 2
    err = capsys.readouterr().err
    assert "teacher has no module 'features.99'" in err and "Traceback" not in err
    # checked on a dry batch before anything was trained or written: no run folder at all
    assert not list(tmp_path.iterdir())


def test_fitnet_arm_interrupted_and_resumed_equals_uninterrupted(tmp_path) -> None:
    from kdlab import load_experiment, run_lab
    from kdlab.errors import RunInterrupted

    overrides = [
        "device=cpu",
        "data.train_limit=128",
        "teacher.model=mlp-teacher",
        "teacher.epochs=1",
        "student.epochs=2",
        "distill.method=fitnet",
        "distill.alpha=0.5",
        "distill.feature_pairs={net.2: net.2}",
    ]
    cfg = load_experiment("digits", overrides)
    whole = run_lab(cfg, out=tmp_path / "whole")
    parent = tmp_path / "cut"
    with pytest.raises(RunInterrupted):  # stop right after the distilled arm's first epoch
        run_lab(cfg, out=parent, stop=lambda: any(parent.glob("*/checkpoints/distilled/latest.json")))
    (cut,) = parent.iterdir()
    run_lab(cfg, resume=cut)
    for name in ("student-distilled.safetensors", "student-distilled.projectors.safetensors"):
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), name


def test_config_options_are_exactly_the_method_options() -> None:
    from kdlab.config.schema import DistillConfig
    from kdlab.kd.objective import METHOD_OPTIONS

    options = DistillConfig().method_options()
    assert set(options) | {"temperature", "t_squared"} == METHOD_OPTIONS | {"warmup_epochs"}
    obj = Objective.from_method("dkd", alpha=0.1, temperature=4.0, **{**options, "warmup_epochs": 3})
    assert obj.warmup_epochs == 3 and obj.name == "dkd"


# ------------------------------------------------------------------------------------------ options models
def test_every_distill_key_belongs_to_a_method_model_or_to_the_objective() -> None:
    from kdlab.config.schema import LOOP_KEYS, DistillConfig
    from kdlab.kd.objective import METHOD_OPTIONS

    config_keys = set(DistillConfig.model_fields) - {"method", "alpha", "warmup_epochs", *LOOP_KEYS}
    assert config_keys == METHOD_OPTIONS
    for name in METHODS:
        options = METHODS.get(name).options
        for key, info in options.model_fields.items():  # bounds and meaning are the config key's
            config = DistillConfig.model_fields[key]
            assert (info.annotation, info.metadata, info.description) == (
                config.annotation,
                config.metadata,
                config.description,
            ), (name, key)
        assert not set(options.refuses) & set(options.model_fields), name


def test_docs_list_exactly_each_options_model() -> None:
    from pathlib import Path

    from kdlab.kd.objective import options_table

    text = (Path(__file__).parents[2] / "docs" / "methods.md").read_text(encoding="utf-8")
    start = text.index("<!-- generated by kdlab.kd.objective.options_table()")
    block = text[text.index("\n", start) + 1 : text.index("<!-- end of generated table -->")]
    assert block == options_table()
    for name in METHODS:
        listed = {row.split("|")[2].strip(" `") for row in block.splitlines() if row.startswith(f"| `{name}` |")}
        assert listed - {"refuses"} == set(METHODS.get(name).options.model_fields), name


def test_objective_reports_every_setting_it_uses() -> None:
    kd = Objective.from_method("kd", alpha=0.25, temperature=2, t_squared=False, dkd_beta=3.0)
    assert kd.settings() == {
        "method": "kd",
        "alpha": 0.25,
        "warmup_epochs": 0,
        "temperature": 2.0,
        "t_squared": False,
        "standardize": False,
    }
    assert Objective.from_method("logit-std", alpha=0.5).settings()["standardize"] is True
    assert Objective.from_method("dist", alpha=0.5).settings()["temperature"] == 1.0  # DIST's own τ default
    dkd = Objective.from_method("dkd", alpha=0.1, warmup_epochs=3, dkd_beta=4)
    assert dkd.settings() == {
        "method": "dkd",
        "alpha": 0.1,
        "warmup_epochs": 3,
        "temperature": 4.0,
        "dkd_alpha": 1.0,
        "dkd_beta": 4.0,
        "standardize": False,
    }
    fitnet = Objective.from_method("fitnet", alpha=0.5, temperature=8.0, feature_pairs={"a": "b"})
    assert "temperature" not in fitnet.settings()  # not used by a feature method
    assert fitnet.settings()["feature_pairs"] == {"a": "b"}
    assert Objective.cross_entropy().settings() == {"method": "ce", "alpha": 1.0, "warmup_epochs": 0}


def test_distiller_settings_match_the_config_path() -> None:
    from kdlab.config.schema import DistillConfig

    teacher, student = _pair()
    dc = DistillConfig(method="dkd", alpha=0.3, temperature=3.0, dkd_beta=2.0)
    from kdlab.config.schema import ExperimentConfig
    from kdlab.lab.run import make_distiller

    via_config = make_distiller(ExperimentConfig(), teacher, student, distill=dc)
    via_api = Distiller(teacher=teacher, student=student, alpha=0.3, temperature=3, method="dkd", dkd_beta=2)
    assert via_config.objective.settings() == via_api.objective.settings()


@pytest.mark.parametrize(
    ("method", "options", "match"),
    [
        ("kd", {"temperature": 0}, r"distill\.temperature: .*greater than or equal to 0\.01"),
        ("kd", {"temperature": float("nan")}, r"distill\.temperature: .*finite"),
        ("dist", {"temperature": 1000}, r"distill\.temperature: .*less than or equal to 100"),
        ("fitnet", {"temperature": -1, "feature_pairs": {"act": "act"}}, r"distill\.temperature"),
        ("dkd", {"dkd_beta": -1}, r"distill\.dkd_beta: .*greater than or equal to 0"),
        ("dist", {"dist_gamma": float("inf")}, r"distill\.dist_gamma: .*finite"),
        ("at", {"feature_weight": 1e9, "feature_pairs": {"act": "act"}}, r"distill\.feature_weight"),
    ],
)
def test_python_api_values_checked_by_the_options_model(method: str, options: dict, match: str) -> None:
    teacher, student = _pair()
    with pytest.raises(ConfigError, match=match) as info:
        Distiller(teacher=teacher, student=student, method=method, **options)
    assert "\n" not in str(info.value)


def test_compare_arm_does_not_inherit_what_its_method_refuses() -> None:
    from kdlab.config.schema import DistillConfig
    from kdlab.lab.compare import parse_methods

    base = DistillConfig(standardize=True, t_squared=False)
    specs = {s.arm: s for s in parse_methods("kd,dkd,fitnet", base)}
    assert (specs["kd"].distill.standardize, specs["kd"].distill.t_squared) == (True, False)
    assert (specs["dkd"].distill.standardize, specs["dkd"].distill.t_squared) == (True, True)
    assert not specs["fitnet"].distill.standardize and specs["fitnet"].notes == (
        "fitnet: distill.standardize=true from the experiment does not apply to fitnet; "
        "this arm uses standardize=false",
    )
