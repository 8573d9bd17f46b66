"""Training checkpoints: resuming `fit` gives bit-identical weights, and a checkpoint is never half-written."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from conftest import TinyNet

from kdlab import fit
from kdlab.data.tensors import TensorLoader
from kdlab.errors import CheckpointError, StorageError
from kdlab.train.checkpoint import ArmCheckpoint, FitState
from kdlab.train.loop import make_optimizer
from kdlab.train.reproduce import capture_rng, restore_rng


def _setup(digits_xy):
    x, y = digits_xy
    torch.manual_seed(3)
    model = TinyNet(hidden=16, dropout=0.5)  # dropout: the global torch RNG matters
    opt = make_optimizer(model.parameters(), lr=0.01)
    loader = TensorLoader(x[:256], y[:256], batch_size=32, shuffle=True, seed=5)
    return model, opt, loader, (x[256:400], y[256:400])


def _train(digits_xy, tmp_path, stop_after: int | None):
    """Train 4 epochs with best-val selection; optionally stop after `stop_after` epochs and resume
    in fresh objects from the checkpoint folder."""
    ckpt = ArmCheckpoint(tmp_path / "ckpt", "scratch")
    model, opt, loader, val = _setup(digits_xy)
    state = FitState()

    def save(_e: int, _r: dict) -> None:
        ckpt.save(model, opt, state)

    if stop_after is not None:
        fit(
            model,
            loader,
            val,
            epochs=stop_after,
            optimizer=opt,
            seed=1,
            select="best-val",
            state=state,
            on_epoch_end=save,
        )
        torch.manual_seed(999)  # the process dies: the RNGs are anything on restart
        np.random.seed(999)
        model, opt, loader, val = _setup(digits_xy)  # fresh objects, as after a restart
        state = ckpt.load(model, opt)
        assert state.epoch == stop_after
    history = fit(
        model, loader, val, epochs=4, optimizer=opt, seed=1, select="best-val", state=state, on_epoch_end=save
    )
    return model, history


def test_resumed_fit_is_bit_identical_to_uninterrupted(digits_xy, tmp_path) -> None:
    ref_model, ref_hist = _train(digits_xy, tmp_path / "a", None)
    for stop_after in (1, 3):
        model, hist = _train(digits_xy, tmp_path / f"b{stop_after}", stop_after)
        for k, v in ref_model.state_dict().items():
            assert torch.equal(v, model.state_dict()[k]), f"{k} differs after resuming at epoch {stop_after}"
        drop = {"seconds", "samples_per_s"}
        assert [{k: v for k, v in r.items() if k not in drop} for r in hist] == [
            {k: v for k, v in r.items() if k not in drop} for r in ref_hist
        ]
        assert hist.selected_epoch == ref_hist.selected_epoch
    # The selection really restored an earlier epoch at least once in this set-up, or the best-val
    # bookkeeping would not be exercised by the resume.
    accs = [r["val_accuracy"] for r in ref_hist]
    assert ref_hist.selected_epoch == 1 + accs.index(max(accs))


def test_resume_from_the_last_epoch_keeps_best_val_selection(digits_xy, tmp_path) -> None:
    ckpt = ArmCheckpoint(tmp_path, "teacher")
    model, opt, loader, val = _setup(digits_xy)
    state = FitState()
    ref = fit(model, loader, val, epochs=3, optimizer=opt, seed=1, select="best-val", state=state,
              on_epoch_end=lambda e, r: ckpt.save(model, opt, state))  # fmt: skip
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    model2, opt2, loader2, _ = _setup(digits_xy)
    state2 = ckpt.load(model2, opt2)
    again = fit(model2, loader2, val, epochs=3, optimizer=opt2, seed=1, select="best-val", state=state2)
    assert again.selected_epoch == ref.selected_epoch
    assert all(torch.equal(v, model2.state_dict()[k]) for k, v in expected.items())


def test_pointer_switch_is_atomic_and_old_pairs_are_deleted(digits_xy, tmp_path, monkeypatch) -> None:
    ckpt = ArmCheckpoint(tmp_path, "scratch")
    model, opt, loader, val = _setup(digits_xy)
    state = FitState()
    fit(
        model,
        loader,
        val,
        epochs=2,
        optimizer=opt,
        seed=1,
        state=state,
        on_epoch_end=lambda e, r: ckpt.save(model, opt, state),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002.json", "epoch-0002.safetensors", "latest.json"]
    saved = {k: v.clone() for k, v in model.state_dict().items()}

    # The disk fills while the epoch-3 pair is written: the epoch-2 checkpoint is still what loads.
    import kdlab.train.checkpoint as mod

    real = mod.atomic_write_json

    def failing(path, obj):
        if path.name == "latest.json":
            raise StorageError(f"{path}: cannot write (No space left on device)")
        real(path, obj)

    monkeypatch.setattr(mod, "atomic_write_json", failing)
    fit(model, loader, val, epochs=1, optimizer=opt, seed=1, state=FitState(epoch=0))
    state.epoch = 3
    with pytest.raises(StorageError):
        ckpt.save(model, opt, state)
    monkeypatch.setattr(mod, "atomic_write_json", real)
    assert json.loads((tmp_path / "latest.json").read_text())["epoch"] == 2
    fresh, fresh_opt, _, _ = _setup(digits_xy)
    assert ckpt.load(fresh, fresh_opt).epoch == 2
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in saved.items())


def test_damaged_checkpoint_is_a_one_line_error(digits_xy, tmp_path) -> None:
    ckpt = ArmCheckpoint(tmp_path, "scratch")
    model, opt, _, _ = _setup(digits_xy)
    ckpt.save(model, opt, FitState(epoch=1))
    blob = tmp_path / "epoch-0001.safetensors"
    blob.write_bytes(blob.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="damaged checkpoint"):
        ckpt.load(model, opt)
    (tmp_path / "latest.json").write_text("{")
    with pytest.raises(CheckpointError, match=r"latest\.json: unreadable"):
        ckpt.load(model, opt)


def test_rng_capture_restores_torch_numpy_and_python() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    state = capture_rng()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    restore_rng(json.loads(json.dumps({k: v for k, v in state.items() if k != "torch" and k != "cuda"})) | {
        "torch": state["torch"], "cuda": []})  # fmt: skip
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
