"""An image folder larger than the host-memory budget: peak RSS of a lab run on the memory-mapped
decoded cache, the decode rate with N processes against one, and the epoch time mapped vs in memory.

A folder of ``--images`` real JPEG files at ``--size`` px is generated (its decoded uint8 array is
``images × 3 × size²`` bytes: 3,000 at 224 px = 452 MB), then, each in a process of its own:

* ``decode``: images/s of the single-process Pillow loop a user writes (one array in memory), of
  :func:`kdlab.data.images.decode_to_file` with one process and with every usable core;
* ``run``: ``kdlab run`` on the folder (two tiny CNNs defined below, one epoch each arm) with
  ``data.max_memory_gb`` = ``--budget`` (mapped: the array is ≥ 4× the budget), on the map with the
  file evicted from the page cache first (``posix_fadvise(DONTNEED)``: read from disk), on the map
  with the file in the page cache, and in memory (``data.max_memory_gb`` = 4). Peak RSS is the
  child's ``ru_maxrss`` (``os.wait4``); ``/proc/<pid>/status`` is sampled every 20 ms for the peak
  of ``RssAnon`` (the process's own memory) and ``RssFile`` (mapped file pages it holds).

    nice -n 10 python -m benchmarks.mmap_rss                     # 3,000 JPEGs at 224 px, budget 0.1 GB
    python -m benchmarks.mmap_rss --images 400 --size 96 --budget 0.002 --out /tmp/mmap.json

Results go to ``benchmarks/results/mmap-rss.json``. Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).parent.parent
GB = 1024**3


def tiny_teacher(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A small strided CNN (8×8 patches, then one 3×3 conv): cheap at 224 px on a CPU."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 16, 8, stride=8),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, num_classes),
    )


def tiny_student(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """An even smaller one: one strided conv, pooled."""
    return nn.Sequential(
        nn.Conv2d(input_shape[0], 8, 8, stride=8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(8 * 16, num_classes),
    )


def run_sets(folder: Path, cache: Path, budget: float, out: Path, eval_batch: int) -> list[str]:
    return [
        "data.name=image-folder",
        f"data.path={folder}",
        f"data.image_size={SIZE}",
        f"data.cache_dir={cache}",
        f"data.max_memory_gb={budget}",
        "teacher.model=benchmarks.mmap_rss:tiny_teacher",
        "student.model=benchmarks.mmap_rss:tiny_student",
        "teacher.epochs=1",
        "student.epochs=1",
        "train.batch_size=32",
        f"train.eval_batch_size={eval_batch}",
        f"distill.teacher_cache_dir={out / 'logits'}",
    ]


SIZE = 224


# ---------------------------------------------------------------------------------- children
def child_decode(folder: Path, how: str, workers: int, scratch: Path) -> dict[str, Any]:
    from kdlab.data import images
    from kdlab.data.decode import decode_image

    files = images._list_files(folder, images._class_names(folder))
    start = time.perf_counter()
    if how == "pillow":  # the loop a user writes: one process, one array in memory
        out = np.empty((len(files), 3, SIZE, SIZE), dtype=np.uint8)
        for i, (p, _) in enumerate(files):
            out[i] = decode_image(p, "RGB", (SIZE, SIZE)).transpose(2, 0, 1)
    else:
        images.decode_to_file(files, SIZE, scratch / f"decoded-{workers}.npy", workers=workers)
    seconds = time.perf_counter() - start
    return {"images": len(files), "seconds": seconds, "images_per_s": len(files) / seconds}


def child_run(folder: Path, cache: Path, budget: float, out: Path, eval_batch: int) -> dict[str, Any]:
    from kdlab.config import load_experiment
    from kdlab.lab.run import run_lab

    start = time.perf_counter()
    run = run_lab(load_experiment("digits", run_sets(folder, cache, budget, out, eval_batch)), out=out / "runs")
    wall = time.perf_counter() - start
    results = json.loads((run / "results.json").read_text())
    with (run / "history.csv").open(encoding="utf-8") as f:
        epochs = {r["arm"]: float(r["seconds"]) for r in csv.DictReader(f)}
    return {
        "wall_seconds": wall,
        "epoch_seconds": epochs,
        "train_samples": results["data"]["train"],
        "test_accuracy": {arm: r["test_accuracy"] for arm, r in results["arms"].items()},
        "teacher_cache": {k: results["teacher_cache"].get(k) for k in ("status", "build_seconds")},
        "train_data": results["performance"]["train_data"],
    }


def child_idle() -> dict[str, Any]:
    """The floor: Python, torch and the lab imported, nothing loaded."""
    import kdlab.lab.run  # noqa: F401

    return {}


# ---------------------------------------------------------------------------------- measuring
def measure(args: list[str]) -> dict[str, Any]:
    """Run ``python -m benchmarks.mmap_rss --child ...args`` and return its JSON, its ru_maxrss and
    the peaks of RssAnon / RssFile sampled from /proc."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.mmap_rss", "--child", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    key = line.split(":")[0]
                    if key in peaks:
                        peaks[key] = max(peaks[key], int(line.split()[1]))
            except (OSError, ValueError, IndexError):
                pass
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed with exit status {proc.returncode}")
    result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # kB on Linux
    result["sampled_peak_mb"] = {k: v / 1024 for k, v in peaks.items()}
    return result


def evict(path: Path) -> None:
    """Drop ``path``'s pages from the page cache, so the next reads come from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=3000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--budget", type=float, default=0.1, help="data.max_memory_gb of the mapped runs (GiB)")
    p.add_argument("--eval-batch", type=int, default=64, help="train.eval_batch_size")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mmap-rss.json")
    p.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    global SIZE
    SIZE = a.size
    if a.child is not None:
        kind, rest = a.child[0], a.child[1:]
        SIZE = int(rest[0]) if rest else SIZE
        if kind == "decode":
            res = child_decode(Path(rest[1]), rest[2], int(rest[3]), Path(rest[4]))
        elif kind == "run":
            res = child_run(Path(rest[1]), Path(rest[2]), float(rest[3]), Path(rest[4]), int(rest[5]))
        else:
            res = child_idle()
        print(json.dumps(res))
        return res

    from benchmarks.timm_cache import write_images
    from kdlab.data import images
    from kdlab.data.memory import available_bytes

    work = Path(tempfile.mkdtemp(prefix="kdlab-mmap-"))
    try:
        folder = work / "imgs"
        start = time.perf_counter()
        write_images(folder, a.images, a.size)
        gen_seconds = time.perf_counter() - start
        decoded = a.images * 3 * a.size * a.size
        workers = images.decode_workers()
        print(f"{a.images} JPEGs at {a.size} px written in {gen_seconds:.0f} s; decoded {decoded / 1e6:.0f} MB, "
              f"{decoded / (a.budget * GB):.1f}× the budget", flush=True)  # fmt: skip
        s = str(a.size)
        decode = {
            "pillow_1_process": measure(["decode", s, str(folder), "pillow", "1", str(work)]),
            "kdlab_1_process": measure(["decode", s, str(folder), "kdlab", "1", str(work)]),
            f"kdlab_{workers}_processes": measure(["decode", s, str(folder), "kdlab", str(workers), str(work)]),
        }
        for f in work.glob("decoded-*.npy"):
            f.unlink()
        base = decode["pillow_1_process"]["images_per_s"]
        for v in decode.values():
            v["vs_pillow"] = v["images_per_s"] / base
        print(json.dumps({k: round(v["images_per_s"]) for k, v in decode.items()}), flush=True)
        cache = work / "cache"
        idle = measure(["idle", s])
        runs: dict[str, Any] = {}
        # The first run decodes the folder into the cache (in parallel); the decode is not what is timed.
        first = measure(["run", s, str(folder), str(cache), str(a.budget), str(work / "first"), str(a.eval_batch)])
        (npy,) = cache.glob("images-*.npy")
        evict(npy)
        for name, budget in (("mapped_cold", a.budget), ("mapped_warm", a.budget), ("in_memory", 4.0)):
            runs[name] = measure(["run", s, str(folder), str(cache), str(budget), str(work / name), str(a.eval_batch)])
            print(name, json.dumps({k: runs[name][k] for k in ("peak_rss_mb", "epoch_seconds")}), flush=True)
        runs["first_with_decode"] = first
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], capture_output=True, text=True, cwd=ROOT)
        result = {
            "command": "nice -n 10 python -m benchmarks.mmap_rss " + " ".join(argv or sys.argv[1:]),
            "commit": commit.stdout.strip() + (" (with uncommitted changes in src/)" if dirty.stdout.strip() else ""),
            "machine": {
                "cpus": os.cpu_count(),
                "usable_cores": workers,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "available_memory_gb": (available_bytes() or 0) / 1e9,
                "note": "2 cores shared with other people's jobs and measurements while this ran: rates and "
                "seconds are noisy; the RSS figures are not affected",
            },
            "folder": {
                "images": a.images,
                "size": a.size,
                "decoded_bytes": decoded,
                "budget_gb": a.budget,
                "decoded_over_budget": decoded / (a.budget * GB),
                "generate_seconds": gen_seconds,
            },
            "decode": decode,
            "idle_rss_mb": idle["peak_rss_mb"],
            "runs": runs,
            "ratios": {
                "decode_parallel_vs_pillow": decode[f"kdlab_{workers}_processes"]["vs_pillow"],
                "peak_rss_mapped_vs_in_memory": runs["mapped_warm"]["peak_rss_mb"] / runs["in_memory"]["peak_rss_mb"],
                **{
                    f"{arm}_epoch_{k}_vs_in_memory": runs[k]["epoch_seconds"][arm]
                    / runs["in_memory"]["epoch_seconds"][arm]
                    for arm in ("teacher", "scratch", "distilled")
                    for k in ("mapped_cold", "mapped_warm")
                },
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    print(f"peak RSS: idle {result['idle_rss_mb']:.0f} MB, mapped {runs['mapped_warm']['peak_rss_mb']:.0f} MB, "
          f"in memory {runs['in_memory']['peak_rss_mb']:.0f} MB; written to {a.out}")  # fmt: skip
    return result


if __name__ == "__main__":
    main()
