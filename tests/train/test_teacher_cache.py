"""Teacher-logit cache: same losses as the live teacher, exact index lookup, fingerprinting, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TinyNet

from kdlab import Distiller
from kdlab.data.tensors import Batch, TensorLoader
from kdlab.errors import ConfigError
from kdlab.kd.objective import Objective
from kdlab.train import teacher_cache


def _teacher() -> TinyNet:
    torch.manual_seed(3)
    return TinyNet(hidden=64, dropout=0.5)


def _student() -> TinyNet:
    torch.manual_seed(4)
    return TinyNet(hidden=8)


def test_cached_and_live_distillation_give_the_same_losses(digits_xy, tmp_path: Path) -> None:
    x, y = digits_xy[0][:300], digits_xy[1][:300]
    teacher = _teacher()
    runs = {}
    for mode in ("live", "cached"):
        d = Distiller(teacher=teacher, student=_student(), alpha=0.3, temperature=4.0)
        loader = TensorLoader(x, y, batch_size=32, shuffle=True, seed=5)
        fn = None
        if mode == "cached":
            fn, record = teacher_cache.build(teacher, x, cache_dir=tmp_path, fallback=d.teacher_logits)
            assert record.status == "miss" and record.rows == 300
        history = d.fit(loader, epochs=3, seed=5, teacher_fn=fn)
        runs[mode] = (history, d.student.state_dict())
    (h_live, w_live), (h_cached, w_cached) = runs["live"], runs["cached"]
    for r_live, r_cached in zip(h_live, h_cached, strict=True):
        for key in ("train_loss", "train_ce", "train_kd", "train_accuracy"):
            assert r_cached[key] == pytest.approx(r_live[key], rel=1e-6, abs=1e-7), key
    for k, v in w_live.items():
        torch.testing.assert_close(w_cached[k], v, rtol=1e-5, atol=1e-6)


def test_lookup_follows_shuffled_indices_and_falls_back_without_them(digits_xy, tmp_path: Path) -> None:
    x = digits_xy[0][:200]
    teacher = _teacher().eval()
    live = []
    cache, _ = teacher_cache.build(teacher, x, cache_dir=tmp_path, fallback=lambda b: live.append(1) or teacher(b.x))
    loader = TensorLoader(x, torch.zeros(200, dtype=torch.long), batch_size=48, shuffle=True, seed=1)
    seen = []
    with torch.no_grad():
        for batch in loader:
            assert batch.index is not None
            seen.append(batch.index)
            torch.testing.assert_close(cache(batch), teacher(batch.x), rtol=1e-5, atol=1e-6)
        assert not torch.equal(torch.cat(seen), torch.arange(200)), "the loader did not shuffle"
        out = cache(Batch(x[:5], torch.zeros(5, dtype=torch.long)))  # a user batch without indices
    assert live == [1] and cache.fallback_batches == 1
    torch.testing.assert_close(out, cache.logits[:5])


def test_fingerprint_invalidation_and_reuse(digits_xy, tmp_path: Path) -> None:
    x = digits_xy[0][:100]
    teacher = _teacher()
    first, rec1 = teacher_cache.build(teacher, x, cache_dir=tmp_path)
    again, rec2 = teacher_cache.build(teacher, x, cache_dir=tmp_path)
    assert (rec1.status, rec2.status) == ("miss", "hit")
    assert rec1.fingerprint == rec2.fingerprint
    assert torch.equal(first.logits, again.logits)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1

    with torch.no_grad():
        teacher.net[4].bias[0] += 0.5  # change one teacher weight
    changed, rec3 = teacher_cache.build(teacher, x, cache_dir=tmp_path)
    assert rec3.status == "miss" and rec3.fingerprint != rec1.fingerprint
    assert not torch.equal(changed.logits, first.logits)

    x2 = x.clone()
    x2[7, 0, 3, 3] += 1.0  # change one input pixel
    _, rec4 = teacher_cache.build(teacher, x2, cache_dir=tmp_path)
    _, rec5 = teacher_cache.build(teacher, x, cache_dir=tmp_path, preprocessing={"augment": {"crop_padding": 2}})
    _, rec6 = teacher_cache.build(teacher, x, cache_dir=tmp_path, dtype="float16")
    assert rec4.status == rec5.status == rec6.status == "miss"
    assert len({rec3.fingerprint, rec4.fingerprint, rec5.fingerprint, rec6.fingerprint}) == 4


def test_float16_storage_is_looked_up_as_float32(digits_xy, tmp_path: Path) -> None:
    x = digits_xy[0][:64]
    teacher = _teacher()
    cache, rec = teacher_cache.build(teacher, x, cache_dir=tmp_path, dtype="float16")
    assert cache.logits.dtype == torch.float16 and rec.dtype == "float16"
    out = cache(Batch(x[:10], torch.zeros(10, dtype=torch.long), torch.arange(10)))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, teacher_cache.compute_logits(teacher, x[:10]), rtol=2e-3, atol=2e-3)


def test_damaged_cache_file_is_rebuilt(digits_xy, tmp_path: Path) -> None:
    x = digits_xy[0][:50]
    _, rec = teacher_cache.build(_teacher(), x, cache_dir=tmp_path)
    Path(rec.path or "").write_bytes(b"not a safetensors file")
    _, rec2 = teacher_cache.build(_teacher(), x, cache_dir=tmp_path)
    assert rec2.status == "miss"


class _FeatureObjective(Objective):
    needs_teacher_features = True


def test_refused_under_random_augmentation_or_teacher_features() -> None:
    kd = Objective.from_method("kd", alpha=0.5, temperature=2.0)
    assert teacher_cache.decide("auto", objective=kd, augment_random=False) == (True, "")
    use, reason = teacher_cache.decide("auto", objective=kd, augment_random=True)
    assert not use and "augmentation" in reason
    with pytest.raises(ConfigError, match=r"teacher_cache=on: random augmentation") as e:
        teacher_cache.decide("on", objective=kd, augment_random=True)
    assert "\n" not in str(e.value)
    feats = _FeatureObjective(alpha=0.5, kd_term=lambda s, t, y: s.sum(), name="fitnet")
    use, reason = teacher_cache.decide("auto", objective=feats, augment_random=False)
    assert not use and "fitnet" in reason
    with pytest.raises(ConfigError, match="live teacher features"):
        teacher_cache.decide("on", objective=feats, augment_random=False)
    assert teacher_cache.decide("off", objective=kd, augment_random=False)[0] is False
    assert teacher_cache.decide("on", objective=Objective.cross_entropy(), augment_random=True)[0] is False


def test_cli_refuses_cache_with_augmentation_before_training(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kdlab.cli import app

    args = ["run", "digits", "--out", str(tmp_path), "-q", "--set", "distill.teacher_cache=on"]
    result = CliRunner().invoke(app, [*args, "--set", "train.augment.hflip=true"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "train.augment" in str(result.exception)
    assert not list(tmp_path.iterdir()), "nothing may be trained or written before the refusal"


def test_lab_records_cache_and_reuses_it_in_a_second_run(tmp_path: Path) -> None:
    from kdlab.config import load_experiment
    from kdlab.lab.run import run_lab

    sets = ["teacher.model=mlp-teacher", "teacher.epochs=1", "student.epochs=1", "data.train_limit=300"]
    sets.append(f"distill.teacher_cache_dir={tmp_path / 'cache'}")
    first = run_lab(load_experiment("digits", sets), out=tmp_path)
    second = run_lab(load_experiment("digits", sets), out=tmp_path)  # same seed: same teacher weights
    r1, r2 = (json.loads((d / "results.json").read_text()) for d in (first, second))
    assert (r1["teacher_cache"]["status"], r2["teacher_cache"]["status"]) == ("miss", "hit")
    assert r1["teacher_cache"]["fingerprint"] == r2["teacher_cache"]["fingerprint"]
    assert r1["teacher_cache"]["rows"] == 300 and r1["teacher_cache"]["build_seconds"] > 0
    assert (second / teacher_cache.RUN_FILE).is_file()
    assert r2["performance"]["precision"] == "float32" and r2["performance"]["train_data"] == "device"
    # The cached run trains on exactly the same teacher targets: same distilled result.
    assert r2["arms"]["distilled"]["test_accuracy"] == r1["arms"]["distilled"]["test_accuracy"]
    off = run_lab(load_experiment("digits", [*sets, "train.augment.crop_padding=1"]), out=tmp_path)
    r3 = json.loads((off / "results.json").read_text())
    assert r3["teacher_cache"]["status"] == "off" and "augmentation" in r3["teacher_cache"]["reason"]
    assert not (off / teacher_cache.RUN_FILE).exists()
