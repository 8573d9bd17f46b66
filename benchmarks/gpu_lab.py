"""The 224×224 lab per batch of 32 on a GPU: teacher, scratch and distill ms/step against the seed.

The classic cats-vs-dogs lab reports, per batch of 32 on a GPU: teacher 95 ms, scratch student
64 ms, distillation 74 ms per step. This runs the same job through kdlab: the cats-vs-dogs preset
(``lab-cnn-teacher``, 9,568,898 parameters; ``lab-cnn-student``, 789,442; 224 px; batch 32) on a
generated folder of ``--images`` real JPEG files (two classes, :func:`benchmarks.timm_cache.write_images`),
with the device's defaults (on CUDA: bf16 autocast, channels-last, fused Adam; ``--compile`` adds
``torch.compile``). Each arm trains ``1 + ceil(steps / steps_per_epoch)`` epochs; the first is
warm-up (cuDNN autotuning, allocator growth, compilation) and is left out. The default 2000 images
give 1600 training images, 50 full batches per epoch (no smaller last batch, so a compiled model
keeps one graph):

    ms/step(arm) = 1000 · Σ_{epochs e ≥ 2} seconds_e / Σ_{epochs e ≥ 2} steps_e     (history.csv)

The epoch's seconds end after the epoch's one device sync, so they include all queued GPU work,
and exclude validation. Targets: seed ms/step ÷ kdlab ms/step ≥ 10 for every arm, and
distill ÷ scratch ≤ 1.15 (with the teacher cache the distilled arm runs no teacher forward; the
one-off cache pass is reported separately as ``cache_build_s``).

    python -m benchmarks.gpu_lab --out OUT_DIR                              # CUDA, 2000 images
    python -m benchmarks.gpu_lab --out OUT_DIR --device cpu --images 64 --steps 4   # smoke test

Writes ``OUT_DIR/gpu-lab.json`` (``gpu-lab-compile.json`` with ``--compile``) and prints a summary.
Part of ``benchmarks/gpu_check.sh``; never part of ``make test``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.timm_cache import write_images
from kdlab.config import load_experiment
from kdlab.lab.run import run_lab

SEED_MS = {"teacher": 95.0, "scratch": 64.0, "distilled": 74.0}
"""The classic lab's GPU ms per batch-32 step (teacher training, scratch student, distillation)."""
TARGET_SPEEDUP = 10.0
TARGET_DISTILL_VS_SCRATCH = 1.15
ARMS = ("teacher", "scratch", "distilled")
TRAIN_SHARE = 0.8  # the preset holds out 10 % for validation and 10 % for testing


def epochs_for(images: int, steps: int, batch_size: int) -> int:
    """Epochs per arm so at least ``steps`` steps are timed after the first (warm-up) epoch:
    ``1 + ceil(steps / steps_per_epoch)``, ``steps_per_epoch = ceil(0.8 · images / batch_size)``."""
    per_epoch = max(1, math.ceil(int(images * TRAIN_SHARE) / batch_size))
    return 1 + math.ceil(steps / per_epoch)


def steady_ms_per_step(rows: list[dict[str, str]], arm: str) -> tuple[float, int]:
    """``(1000 · Σ seconds / Σ steps, Σ steps)`` over ``arm``'s epochs after the first."""
    mine = [r for r in rows if r["arm"] == arm]
    timed = mine[1:] or mine
    seconds = sum(float(r["seconds"]) for r in timed)
    steps = sum(int(r["steps"]) for r in timed)
    return 1000.0 * seconds / steps, steps


def _gpu_facts(device: str) -> dict[str, Any]:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    facts: dict[str, Any] = {
        "gpu": props.name,
        "gpu_memory_gb": round(props.total_memory / 1024**3, 1),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 1024**2, 1),
    }
    try:
        smi = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
        facts["driver"] = subprocess.run(smi, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run(out_dir: Path, *, images: int, steps: int, device: str, batch_size: int, compile: bool) -> dict[str, Any]:
    """Generate the folder, run the preset through kdlab, and return the measurements."""
    epochs = epochs_for(images, steps, batch_size)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="kdlab-gpu-lab-") as tmp:
        root = Path(tmp) / "images"
        start = time.perf_counter()
        write_images(root, images, 224)
        write_s = time.perf_counter() - start
        sets = [
            f"data.path={root}",
            "data.image_size=224",
            f"data.cache_dir={Path(tmp) / 'cache'}",
            f"distill.teacher_cache_dir={Path(tmp) / 'logits'}",  # a fresh cache: its pass is measured
            f"teacher.epochs={epochs}",
            f"student.epochs={epochs}",
            f"train.batch_size={batch_size}",
            f"train.compile={str(compile).lower()}",
            f"device={device}",
            f"out={Path(tmp) / 'runs'}",
        ]
        cfg = load_experiment("cats-vs-dogs", sets)
        start = time.perf_counter()
        run_dir = run_lab(cfg)
        lab_s = time.perf_counter() - start
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        with (run_dir / "history.csv").open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    arms: dict[str, Any] = {}
    for arm in ARMS:
        ms, timed = steady_ms_per_step(rows, arm)
        arms[arm] = {
            "ms_per_step": ms,
            "timed_steps": timed,
            "epoch_seconds": [float(r["seconds"]) for r in rows if r["arm"] == arm],
            "seed_ms_per_step": SEED_MS[arm],
            "speedup_vs_seed": SEED_MS[arm] / ms,
            "params": results["arms"][arm].get("params"),
            "test_accuracy": results["arms"][arm].get("test_accuracy"),
        }
    ratio = arms["distilled"]["ms_per_step"] / arms["scratch"]["ms_per_step"]
    cache = results.get("teacher_cache") or {}
    return {
        "benchmark": "gpu_lab",
        "preset": "cats-vs-dogs",
        "device": device,
        "compile": compile,
        "images": images,
        "image_size": 224,
        "batch_size": batch_size,
        "epochs_per_arm": epochs,
        "arms": arms,
        "distill_vs_scratch": ratio,
        "targets": {
            "speedup_vs_seed": TARGET_SPEEDUP,
            "distill_vs_scratch": TARGET_DISTILL_VS_SCRATCH,
            "speedup_met": all(a["speedup_vs_seed"] >= TARGET_SPEEDUP for a in arms.values()),
            "distill_vs_scratch_met": ratio <= TARGET_DISTILL_VS_SCRATCH,
        },
        "cache_build_s": cache.get("build_seconds"),
        "cache_status": cache.get("status"),
        "performance": results.get("performance"),
        "write_images_s": write_s,
        "lab_wall_s": lab_s,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "commit": _commit(),
        **_gpu_facts(device),
    }


def summary(out: dict[str, Any]) -> list[str]:
    """The printed lines: one per arm, then the ratio and the targets."""
    lines = [f"224x224 lab, batch {out['batch_size']}, {out['device']}{' + compile' if out['compile'] else ''}:"]
    for arm in ARMS:
        a = out["arms"][arm]
        lines.append(
            f"  {arm:<9} {a['ms_per_step']:8.2f} ms/step (seed {a['seed_ms_per_step']:.0f} ms: "
            f"{a['speedup_vs_seed']:.1f}x; {a['timed_steps']} steps timed)"
        )
    t = out["targets"]
    lines.append(
        f"  distill / scratch {out['distill_vs_scratch']:.3f} (target <= {t['distill_vs_scratch']}: "
        f"{'met' if t['distill_vs_scratch_met'] else 'NOT met'}); speedup >= {t['speedup_vs_seed']:.0f}x: "
        f"{'met' if t['speedup_met'] else 'NOT met'}; cache pass {out['cache_build_s'] or 0:.2f} s"
    )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu-lab.json (created)")
    ap.add_argument(
        "--images", type=int, default=2000, help="JPEGs to generate (a multiple of 40 keeps every batch of 32 full)"
    )
    ap.add_argument("--steps", type=int, default=100, help="steps to time per arm after the warm-up epoch")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--compile", action="store_true", help="train.compile=true (torch.compile)")
    args = ap.parse_args()
    if args.images < 20 or args.steps < 1:
        ap.error("--images must be at least 20 and --steps at least 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA GPU on this machine; use --device cpu for a smoke test")
    out = run(
        args.out,
        images=args.images,
        steps=args.steps,
        device=args.device,
        batch_size=args.batch_size,
        compile=args.compile,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    dest = args.out / ("gpu-lab-compile.json" if args.compile else "gpu-lab.json")
    dest.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print("\n".join(summary(out)))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
