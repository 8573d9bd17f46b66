"""Training-step time with glibc's default allocator vs kdlab's ``train.host_allocator=auto``.

    python -m benchmarks.allocator              # 28×28 at batch 32/128/512 and 224×224 at batch 32
    python -m benchmarks.allocator --steps 40

The allocator setting is process-wide and cannot be undone, so each case runs in two child
processes, one per setting, alternately and ``--repeats`` times; the median ms/step of each side is
kept. A case is Adam training steps of the lab student CNN on random data (channels-last, as kdlab
runs it on the CPU), plus inference of the lab teacher at the same size (what the teacher cache and
evaluation pay). Printed: ms/step for both settings, their ratio (default ÷ reuse, higher is better),
and the minor page faults per step. Results go to ``benchmarks/results/allocator.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.child import run_child

RESULTS = Path(__file__).parent / "results"
CASES = [  # (label, channels, side, batch)
    ("28x28 batch 32", 1, 28, 32),
    ("28x28 batch 128", 1, 28, 128),
    ("28x28 batch 512", 1, 28, 512),
    ("224x224 batch 32", 3, 224, 32),
]


def child(setting: str, channels: int, side: int, batch: int, steps: int, threads: int) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    import resource

    import torch

    from kdlab.models import create_model
    from kdlab.train import accel

    if setting == "reuse":
        assert accel.tune_host_allocator() == "glibc-reuse", "this C library does not take the setting"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape = (channels, side, side)
    plan = accel.plan(torch.device("cpu"))
    student = accel.prepare_model(create_model("lab-cnn-student", num_classes=10, input_shape=shape), plan)
    teacher = accel.prepare_model(create_model("lab-cnn-teacher", num_classes=10, input_shape=shape), plan).eval()
    opt = torch.optim.Adam(student.parameters())
    x = torch.rand(batch, *shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn: Any) -> tuple[float, float]:
        for _ in range(5):  # warm-up: the heap reaches its working size
            fn()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        ms = (time.perf_counter() - start) * 1000 / steps
        return ms, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / steps

    train_ms, train_faults = timed(train_step)
    with torch.inference_mode():
        infer_ms, infer_faults = timed(lambda: teacher(x))
    return {"train_ms": train_ms, "train_faults": train_faults, "infer_ms": infer_ms, "infer_faults": infer_faults}


def measure(setting: str, channels: int, side: int, batch: int, steps: int, threads: int) -> dict[str, float]:
    args = ["--child", setting, str(channels), str(side), str(batch), "--steps", str(steps), "--threads", str(threads)]
    return run_child("benchmarks.allocator", args)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50, help="timed steps per measurement (224x224: a quarter)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per setting and case (median kept)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--child", nargs=4, metavar=("SETTING", "C", "SIDE", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        setting, channels, side, batch = args.child[0], *map(int, args.child[1:])
        print(json.dumps(child(setting, channels, side, batch, args.steps, args.threads)), flush=True)
        return {}
    if platform.libc_ver()[0] != "glibc":
        print("the allocator setting only exists with glibc; nothing to measure")
        return {}
    print(f"host allocator benchmark: {args.threads} threads, median of {args.repeats}", flush=True)
    cases: dict[str, Any] = {}
    for label, channels, side, batch in CASES:
        steps = max(3, args.steps // 4) if side > 100 else args.steps
        runs: dict[str, list[dict[str, float]]] = {"system": [], "reuse": []}
        for _ in range(args.repeats):  # alternate the two settings so that drifting load hits both
            for setting in runs:
                runs[setting].append(measure(setting, channels, side, batch, steps, args.threads))
        row: dict[str, Any] = {}
        for setting, rs in runs.items():
            for key in rs[0]:
                row[f"{setting}_{key}"] = statistics.median(r[key] for r in rs)
        row["train_ratio"] = row["system_train_ms"] / row["reuse_train_ms"]
        row["infer_ratio"] = row["system_infer_ms"] / row["reuse_infer_ms"]
        cases[label] = row
        print(
            f"  {label:<17} train {row['system_train_ms']:7.1f} -> {row['reuse_train_ms']:7.1f} ms/step "
            f"({row['train_ratio']:.2f}x; faults/step {row['system_train_faults']:,.0f} -> "
            f"{row['reuse_train_faults']:,.0f}), teacher inference {row['system_infer_ms']:7.1f} -> "
            f"{row['reuse_infer_ms']:7.1f} ms ({row['infer_ratio']:.2f}x)",
            flush=True,
        )
    result = {
        "name": "allocator",
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "libc": platform.libc_ver()},
        "cases": cases,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "allocator.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}")
    return result


if __name__ == "__main__":
    main()
