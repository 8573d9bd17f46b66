"""The CUDA path: bf16 autocast, channels-last, fused Adam, torch.compile, the teacher cache on the
device, an NCCL process group and a bit-identical resume under ``deterministic: true``.

Every test here is marked ``gpu``: tests/conftest.py skips them with "needs a CUDA GPU" where
``torch.cuda.is_available()`` is false, and ``benchmarks/gpu_check.sh`` runs them (``pytest -m gpu``).

Stated tolerances (float32 references run with TF32 off, so they are true float32):

* bf16 autocast against float32, the lab's 224×224 student on a fixed batch of 32: loss within 2e-2
  relative; one SGD step's weight update within 5e-2 relative (L2 over all parameters).
* channels-last against contiguous, compiled against eager, cache lookups against a live teacher
  forward (all float32): within 1e-4 absolute and relative.
* fused Adam against the unfused step, same gradients: within 1e-6 absolute after each of 3 steps.
* a 1-process DDP step over NCCL against the plain step: within 1e-6 absolute (cuDNN deterministic).
* a lab run killed mid-teacher and resumed, ``deterministic: true``: results, history and weight
  files byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from kdlab import fit
from kdlab.data.tensors import Batch, prepare_inputs
from kdlab.kd import losses
from kdlab.models import create_model
from kdlab.train import accel, teacher_cache
from kdlab.train.loop import make_optimizer

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
LAB_SHAPE = (3, 224, 224)  # the cats-vs-dogs preset's input
TESTS = Path(__file__).parents[1]  # tests/, where slow_kdlab.py lives


@pytest.fixture
def strict_fp32() -> Iterator[None]:
    """Float32 convolutions and matmuls without TF32 (cuDNN allows TF32 convolutions by default)."""
    # The allow_tf32 flags (not fp32_precision): setting the newer per-operator flags makes any later
    # read of torch.backends.cudnn.allow_tf32 (torch.compile reads it) raise, the flags set here do not.
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before


def _student(seed: int = 0, shape: tuple[int, int, int] = LAB_SHAPE) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("lab-cnn-student", num_classes=2, input_shape=shape).to(CUDA)


def _batch(n: int = 32, shape: tuple[int, int, int] = LAB_SHAPE, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    return prepare_inputs(x.to(CUDA)), y.to(CUDA)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The lab's distillation objective (alpha 0.05, T 5, no T²) on fixed teacher logits, as the loop
    computes it: forward under :func:`accel.autocast`, objective outside it (float32)."""
    teacher_logits = torch.linspace(-2.0, 2.0, 2 * len(y), device=CUDA).view(len(y), 2)
    with accel.autocast(CUDA, precision):
        logits = model(x)
    loss = losses.distillation_objective(logits, teacher_logits, y, alpha=0.05, temperature=5.0, t_squared=False)
    return logits, loss


def test_bf16_autocast_matches_float32_on_the_lab_student(strict_fp32) -> None:
    x, y = _batch()
    results: dict[str, dict[str, Any]] = {}
    for precision in ("float32", "bfloat16"):
        model = _student(seed=0)
        start = [p.detach().clone() for p in model.parameters()]
        opt = make_optimizer(model.parameters(), name="sgd", lr=0.1)  # first step: w -= lr * grad
        logits, loss = _loss(model, x, y, precision)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        update = torch.cat([(p.detach() - s).flatten() for p, s in zip(model.parameters(), start, strict=True)])
        results[precision] = {"logits": logits.dtype, "loss_dtype": loss.dtype, "loss": loss.item(), "update": update}
    f32, bf16 = results["float32"], results["bfloat16"]
    assert f32["logits"] == torch.float32 and bf16["logits"] == torch.bfloat16  # autocast reached the forward
    assert f32["loss_dtype"] == bf16["loss_dtype"] == torch.float32  # the objective stays float32
    assert bf16["loss"] == pytest.approx(f32["loss"], rel=2e-2)
    assert bf16["loss"] != f32["loss"]  # bf16 really ran: the two are not the same computation
    u32, u16 = f32["update"], bf16["update"]
    assert float(u32.norm()) > 0
    assert float((u16 - u32).norm() / u32.norm()) < 5e-2


def test_cuda_plan_uses_bf16_channels_last_and_fused_adam_and_keeps_outputs(strict_fp32) -> None:
    plan = accel.plan(CUDA)
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    assert plan.record() == {
        "device": "cuda",
        "precision": expected,
        "channels_last": True,
        "fused_optimizer": True,
        "compile": False,
    }
    torch.manual_seed(0)
    teacher = create_model("lab-cnn-teacher", num_classes=2, input_shape=(3, 128, 128)).to(CUDA).eval()
    x, _ = _batch(8, (3, 128, 128))
    with torch.no_grad():
        before = teacher(x)
    accel.prepare_model(teacher, plan)
    convs = [m.weight for m in teacher.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not convs[1].is_contiguous()  # a real layout change, not a no-op
    with torch.no_grad():
        after = teacher(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_fused_adam_step_equals_the_unfused_step() -> None:
    a = _student(seed=0)
    b = copy.deepcopy(a)
    opt_a = make_optimizer(a.parameters(), lr=1e-3)
    opt_b = make_optimizer(b.parameters(), lr=1e-3, fused=True)
    assert opt_b.defaults["fused"] is True and not opt_a.defaults.get("fused")
    g = torch.Generator(device=CUDA).manual_seed(0)
    for step in range(3):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            grad = torch.randn(pa.shape, device=CUDA, generator=g)
            pa.grad, pb.grad = grad.clone(), grad.clone()
        opt_a.step()
        opt_b.step()
        for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pb, pa, atol=1e-6, rtol=0, msg=lambda m, n=name, s=step: f"{n} step {s}: {m}")
    start = _student(seed=0).parameters()
    moved = max(float((pa.detach() - p0.detach()).abs().max()) for pa, p0 in zip(a.parameters(), start, strict=True))
    assert moved > 1e-3  # three Adam steps of lr 1e-3 really changed the weights


def test_compiled_training_equals_eager(strict_fp32) -> None:
    shape = (3, 64, 64)
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (128, *shape), dtype=torch.uint8, generator=g)  # 4 full batches: one graph
    y = torch.randint(0, 2, (128,), generator=g)
    models, histories = {}, {}
    for compiled in (False, True):
        model = _student(seed=0, shape=shape)
        opt = make_optimizer(model.parameters(), name="sgd", lr=0.01)  # linear in the gradients, unlike Adam
        histories[compiled] = fit(
            model, (x, y), epochs=1, batch_size=32, optimizer=opt, device="cuda", compile=compiled, verbose=0
        )
        models[compiled] = model
    assert histories[True][0]["train_loss"] == pytest.approx(histories[False][0]["train_loss"], rel=1e-4)
    for (name, p_eager), p_comp in zip(models[False].named_parameters(), models[True].parameters(), strict=True):
        torch.testing.assert_close(p_comp, p_eager, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    model = models[True].eval()
    xb = prepare_inputs(x[:32].to(CUDA))
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(xb), model(xb), atol=1e-4, rtol=1e-4)


def test_teacher_cache_built_on_the_device_answers_like_the_live_teacher(strict_fp32, tmp_path: Path) -> None:
    torch.manual_seed(0)
    shape = (3, 128, 128)
    teacher = create_model("lab-cnn-teacher", num_classes=2, input_shape=shape).to(CUDA)
    accel.prepare_model(teacher, accel.plan(CUDA))
    teacher.eval()
    x = torch.randint(0, 256, (96, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)).to(CUDA)
    prep = teacher_cache.preprocessing_of(x)
    cache, record = teacher_cache.build(teacher, x, preprocessing=prep, cache_dir=tmp_path, device=CUDA, batch_size=64)
    assert record.status == "miss" and record.rows == 96
    assert cache.logits.device.type == "cuda" and cache.logits.dtype == torch.float32
    index = torch.tensor([95, 0, 17, 64, 63, 3], device=CUDA)  # across the two build batches, out of order
    with torch.no_grad():
        live = teacher(prepare_inputs(x[index])).float()
    got = cache(Batch(x[index], torch.zeros(len(index), dtype=torch.long, device=CUDA), index))
    assert got.device.type == "cuda"
    torch.testing.assert_close(got, live, atol=1e-4, rtol=1e-4)
    again, record2 = teacher_cache.build(teacher, x, preprocessing=prep, cache_dir=tmp_path, device=CUDA)
    assert record2.status == "hit" and again.logits.device.type == "cuda"
    assert torch.equal(again.logits, cache.logits)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_process_nccl_group_reduces_gathers_and_trains_under_ddp() -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    assert dist.is_nccl_available()
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    deterministic = torch.backends.cudnn.deterministic
    torch.backends.cudnn.deterministic = True
    try:
        assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
        t = torch.arange(6.0, device=CUDA)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        assert torch.equal(t, torch.arange(6.0, device=CUDA))
        parts = [torch.empty(3, device=CUDA)]
        dist.all_gather(parts, torch.tensor([1.0, 2.0, 3.0], device=CUDA))
        assert parts[0].tolist() == [1.0, 2.0, 3.0]
        dist.barrier()

        plain = _student(seed=0, shape=(3, 64, 64))
        accel.prepare_model(plain, accel.plan(CUDA))
        wrapped = DistributedDataParallel(copy.deepcopy(plain), device_ids=[0])
        x, y = _batch(16, (3, 64, 64))
        for model in (plain, wrapped):
            opt = make_optimizer(model.parameters(), name="sgd", lr=0.1)
            opt.zero_grad(set_to_none=True)
            losses.cross_entropy(model(x), y).backward()
            opt.step()
        for (name, p), q in zip(plain.named_parameters(), wrapped.module.parameters(), strict=True):
            torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    finally:
        torch.backends.cudnn.deterministic = deterministic
        dist.destroy_process_group()


# ---------------------------------------------------------------- resume under deterministic: true
RESUME_LAB = """\
base: digits
name: gpu-resume
device: cuda
deterministic: true
data: {train_limit: 300}
teacher: {model: lab-cnn-teacher, epochs: 3}
student: {model: mlp-student, epochs: 2}
train: {batch_size: 32}
"""
WEIGHTS = ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors")
TIMING_ARM_KEYS = {"train_seconds", "ms_per_step", "latency_ms_per_sample", "latency_ms_per_batch32"}
TIMING_HISTORY_KEYS = {"seconds", "samples_per_s"}


def _kdlab(*args: str, delay: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "KDLAB_TEST_STEP_DELAY": str(delay)}
    cmd = [sys.executable, str(TESTS / "slow_kdlab.py"), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _comparable(run: Path) -> tuple[dict[str, Any], list[dict[str, str]], list[bytes]]:
    """results.json, history.csv and weight bytes of a run, minus run id, timings and cache facts."""
    results = json.loads((run / "results.json").read_text())
    results.pop("run_id")
    results.pop("teacher_cache", None)
    for arm in results["arms"].values():
        for key in TIMING_ARM_KEYS:
            arm.pop(key, None)
    with (run / "history.csv").open() as f:
        history = [{k: v for k, v in row.items() if k not in TIMING_HISTORY_KEYS} for row in csv.DictReader(f)]
    return results, history, [(run / w).read_bytes() for w in WEIGHTS]


def _only_run(parent: Path) -> Path:
    (run,) = [p for p in parent.iterdir() if p.is_dir()]
    return run


def test_resume_on_cuda_with_deterministic_true_is_bit_identical(tmp_path: Path) -> None:
    (tmp_path / "lab.yaml").write_text(RESUME_LAB)
    ref = _kdlab("run", str(tmp_path / "lab.yaml"), "--out", str(tmp_path / "ref"), "-q")
    _out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-2000:]
    reference = _only_run(tmp_path / "ref")
    perf = json.loads((reference / "results.json").read_text())["performance"]
    assert perf["device"].startswith("cuda") and perf["channels_last"] and perf["fused_optimizer"]
    assert json.loads((reference / "env.json").read_text())["deterministic_algorithms"] is True

    proc = _kdlab("run", str(tmp_path / "lab.yaml"), "--out", str(tmp_path / "runs"), "-q", delay=0.1)
    run = None
    deadline = time.monotonic() + 240
    while run is None and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for pointer in (tmp_path / "runs").glob("*/checkpoints/teacher/latest.json"):
            try:
                if json.loads(pointer.read_text())["epoch"] == 1:
                    run = pointer.parents[2]
            except (OSError, ValueError):
                pass  # replaced while being read: look again
        time.sleep(0.01)
    assert run is not None, "the teacher's epoch-1 checkpoint never appeared"
    proc.send_signal(signal.SIGKILL)  # inside teacher epoch 2: dropout's CUDA generator state matters
    proc.communicate(timeout=60)
    assert json.loads((run / "checkpoints/teacher/latest.json").read_text())["epoch"] == 1

    resumed = _kdlab("run", "--resume", str(run), "-q")
    _out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    got, want = _comparable(run), _comparable(reference)
    assert got[0] == want[0]
    assert got[1] == want[1]
    for name, a, b in zip(WEIGHTS, got[2], want[2], strict=True):
        assert a == b, f"{name} differs after resuming"
