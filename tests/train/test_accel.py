"""Device and precision plan: float32 and channels-last convolutions on CPU by default; bfloat16 autocast on request."""

from __future__ import annotations

import platform
import resource
import subprocess
import sys

import pytest
import torch
from conftest import TinyNet

from kdlab import fit
from kdlab.errors import ConfigError
from kdlab.train import accel


def test_cpu_plan_keeps_float32_and_uses_channels_last() -> None:
    plan = accel.plan(torch.device("cpu"))
    assert plan.record() == {
        "device": "cpu",
        "precision": "float32",
        "channels_last": True,
        "fused_optimizer": False,
        "compile": False,
    }
    assert accel.plan(torch.device("cpu"), precision="bfloat16").precision == "bfloat16"
    with pytest.raises(ConfigError, match=r"train\.precision"):
        accel.plan(torch.device("cpu"), precision="float8")
    assert not accel.plan(torch.device("mps")).channels_last


def test_channels_last_applies_to_conv_models_only_and_keeps_outputs() -> None:
    from kdlab.models import create_model

    torch.manual_seed(0)
    cnn = create_model("lab-cnn-teacher", num_classes=10, input_shape=(1, 28, 28)).eval()
    x = torch.rand(4, 1, 28, 28)
    before = cnn(x)
    accel.prepare_model(cnn, accel.plan(torch.device("cpu")))
    conv = cnn.features[3].weight  # 32 -> 64 channels (with one input channel both layouts coincide)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert torch.allclose(cnn(x), before, atol=1e-5)
    mlp = TinyNet()
    accel.prepare_model(mlp, accel.plan(torch.device("cpu")))
    assert all(p.is_contiguous() for p in mlp.parameters())


def test_bfloat16_autocast_reaches_the_forward_pass(digits_xy) -> None:
    x, y = digits_xy[0][:256], digits_xy[1][:256]
    dtypes: list[torch.dtype] = []
    losses = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = TinyNet()
        hook = model.net[1].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        history = fit(model, (x, y), epochs=1, batch_size=64, precision=precision)
        hook.remove()
        losses[precision] = history[-1]["train_loss"]
    assert dtypes[:4] == [torch.float32] * 4 and dtypes[-4:] == [torch.bfloat16] * 4
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=0.02)
    assert losses["bfloat16"] != losses["float32"]


_ALLOCATOR_PROBE = """
import resource, sys, torch
from kdlab.train import accel
from kdlab.config.schema import ExperimentConfig
from kdlab.lab.runtime import Runtime

torch.set_num_threads(1)

def faults_for_repeated_64mib_tensors():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        t = torch.ones(16 * 2**20)  # 64 MiB, written once, freed at the next iteration
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

mode = sys.argv[1]
rt = Runtime.start(ExperimentConfig.model_validate({"device": "cpu", "train": {"host_allocator": mode}}))
print(rt.record()["host_allocator"], faults_for_repeated_64mib_tensors())
"""


@pytest.mark.skipif(
    not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"), reason="glibc's allocator only"
)
def test_host_allocator_reuses_freed_memory_on_cpu_runs_and_records_it() -> None:
    """A 64 MiB block freed and allocated again 20 times: glibc's default returns it to the OS each
    time (16,384 page faults per round); with ``train.host_allocator=auto`` the pages are reused."""

    procs = {
        mode: subprocess.Popen([sys.executable, "-c", _ALLOCATOR_PROBE, mode], stdout=subprocess.PIPE, text=True)
        for mode in ("system", "auto")  # two processes: the setting cannot be undone within one
    }
    outs = {mode: p.communicate(timeout=120)[0].split() for mode, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values())
    (state_system, faults_system), (state_auto, faults_auto) = ((o[0], int(o[1])) for o in outs.values())
    assert state_system == "system" and state_auto == "glibc-reuse"
    pages = 64 * 2**20 // resource.getpagesize()
    assert faults_system > 15 * pages  # every round faults the block in again
    assert faults_auto < 3 * pages  # first touch only (plus noise)
