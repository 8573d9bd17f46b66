"""kdlab speed and memory against the plain PyTorch loop, measured in the same process.

    python -m benchmarks.run            # full: Fashion-MNIST train split (54,000), 5 epochs
    python -m benchmarks.run --quick    # 10 % of the data, for a first check

Models are the lab CNNs at 28×28 (teacher 200,778 / student 54,410 parameters; randomly
initialized: speed does not depend on what the weights learned). Both sides use the same data,
models, initial weights, epochs, batch size and threads. Printed ratios (higher is better for kdlab):

* ``distill_vs_scratch``: kdlab distillation samples/s ÷ kdlab scratch samples/s, cache built;
* ``vs_plain_loop``: plain-loop distillation seconds ÷ kdlab distillation seconds, cache build
  included;
* ``compare_vs_plain_loop``: four plain distillations ÷ four kdlab distillations sharing one cache;
* peak RSS of a one-epoch distillation vs a one-epoch scratch run, each in fresh processes
  (median of 3), and samples/s at batch 32/128/512.

kdlab's host-allocator setting (what ``kdlab run`` applies on the CPU) is process-wide, so it is
switched on before anything runs and the plain loop runs under it too: the ratios measure the loops,
not the allocator (``benchmarks.allocator`` measures that, in separate processes).

Results go to ``benchmarks/results/<name>.json``. Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import plain
from benchmarks.child import machine, run_child
from kdlab import Distiller
from kdlab.config.schema import DataConfig
from kdlab.data.bundle import build_data
from kdlab.data.tensors import TensorLoader, prepare_inputs
from kdlab.kd.objective import METHODS
from kdlab.models import create_model
from kdlab.train import accel, teacher_cache
from kdlab.train.loop import fit
from kdlab.version import __version__

RESULTS = Path(__file__).parent / "results"
KDLAB_ACCEL = accel.plan(torch.device("cpu"))  # what `kdlab run` uses on this device
TARGETS = {"distill_vs_scratch": 0.9, "vs_plain_loop": 1.8, "compare_vs_plain_loop": 2.5}
ALPHA, TEMPERATURE = 0.05, 5.0  # the Fashion-MNIST preset's (the classic lab's) settings


def load_data(fraction: float) -> tuple[str, Tensor, Tensor]:
    """Fashion-MNIST's training split (uint8), or digits when Fashion-MNIST is not installed."""
    try:
        bundle = build_data(DataConfig(name="fashion-mnist", val_fraction=0.1), seed=0)
    except Exception:
        bundle = build_data(DataConfig(name="digits"), seed=0)
    x, y = torch.as_tensor(bundle.train.x[:]), bundle.train.y  # (a mapped split: its rows read)
    if fraction < 1:
        n = max(256, int(len(y) * fraction))
        x, y = x[:n], y[:n]
    return bundle.name, x, y


def make_models(x: Tensor, classes: int = 10) -> tuple[nn.Module, dict[str, Tensor]]:
    shape = tuple(x.shape[1:])
    torch.manual_seed(0)
    teacher = create_model("lab-cnn-teacher", num_classes=classes, input_shape=shape).eval()
    torch.manual_seed(1)
    student = create_model("lab-cnn-student", num_classes=classes, input_shape=shape)
    return teacher, {k: v.clone() for k, v in student.state_dict().items()}


def fresh_student(x: Tensor, init: dict[str, Tensor], *, kdlab: bool = False) -> nn.Module:
    """The student at its initial weights; ``kdlab=True`` applies kdlab's CPU memory format
    (channels-last), as the lab does, while the plain loop keeps PyTorch's default layout."""
    student = create_model("lab-cnn-student", num_classes=10, input_shape=tuple(x.shape[1:]))
    student.load_state_dict(init)
    return accel.prepare_model(student, KDLAB_ACCEL) if kdlab else student


def methods() -> list[tuple[str, dict[str, Any]]]:
    """Four distillation set-ups: kd and the registered logit methods, padded with KD at other
    temperatures. The plain loop uses Hinton's KD loss for each (its cost is the two networks')."""
    out: list[tuple[str, dict[str, Any]]] = [("kd", {"temperature": TEMPERATURE})]
    # Logit methods only: feature methods (fitnet, at) need live teacher features and layer pairs.
    out += [(m, {"temperature": TEMPERATURE}) for m in ("dkd", "dist", "logit-std") if m in METHODS.names()]
    for t in (2.0, 1.0, 8.0):
        if len(out) < 4:
            out.append(("kd", {"temperature": t}))
    return out


def kdlab_scratch(x: Tensor, y: Tensor, init: dict[str, Tensor], epochs: int, batch: int) -> dict[str, float]:
    student = fresh_student(x, init, kdlab=True)
    loader = TensorLoader(x, y, batch_size=batch, shuffle=True, seed=0)
    start, cpu = time.perf_counter(), time.process_time()
    fit(student, loader, epochs=epochs, seed=0)
    return timing(start, cpu, epochs * len(y), epochs)


def timing(start: float, cpu: float, samples: int, epochs: int) -> dict[str, float]:
    """Wall seconds since ``start`` and this process's CPU seconds (all threads) since ``cpu``: CPU
    seconds per sample are what the loop costs, wall seconds add whatever else the cores were doing."""
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "epochs": epochs,
        "cpu_seconds": time.process_time() - cpu,
    }


def kdlab_distill(
    teacher: nn.Module,
    x: Tensor,
    y: Tensor,
    init: dict[str, Tensor],
    epochs: int,
    batch: int,
    cache: teacher_cache.TeacherCache,
    method: str = "kd",
    options: dict[str, Any] | None = None,
) -> dict[str, float]:
    options = options or {"temperature": TEMPERATURE}
    student = fresh_student(x, init, kdlab=True)
    if method == "kd":
        options = {"t_squared": False, **options}  # the lab's KD; the other methods always scale by T²
    d = Distiller(teacher=teacher, student=student, alpha=ALPHA, method=method, **options)
    loader = TensorLoader(x, y, batch_size=batch, shuffle=True, seed=0)
    start, cpu = time.perf_counter(), time.process_time()
    d.fit(loader, epochs=epochs, seed=0, teacher_fn=cache)
    return timing(start, cpu, epochs * len(y), epochs)


def build_cache(teacher: nn.Module, x: Tensor) -> tuple[teacher_cache.TeacherCache, float]:
    """A cache built from scratch (a fresh folder: never a hit), and the seconds it took."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        cache, record = teacher_cache.build(teacher, x, cache_dir=Path(folder))
        seconds = time.perf_counter() - start
    assert record.status == "miss"
    return cache, seconds


def memory_child(kind: str, fraction: float, threads: int, repeats: int = 3) -> dict[str, float]:
    """Peak RSS of one epoch of ``kind`` (plain_distill, kdlab_scratch, kdlab_distill — the last
    with its cache build), each time in a fresh process, measured from the moment data and models
    are loaded (the peak is reset then, so loading the dataset does not count). ``repeats`` processes;
    the median peak is reported, and the largest too (single processes vary by a few hundred MB
    now and then). ``ready_mb`` is the RSS when the measurement starts."""
    args = ["--memory-child", kind, "--fraction", str(fraction), "--threads", str(threads)]
    runs = [run_child("benchmarks.run", args) for _ in range(repeats)]
    peaks = [r["peak_mb"] for r in runs]
    return {
        "peak_mb": statistics.median(peaks),
        "max_peak_mb": max(peaks),
        "ready_mb": statistics.median(r["ready_mb"] for r in runs),
    }


def run_memory_child(kind: str, fraction: float) -> dict[str, float]:
    _, x, y = load_data(fraction)
    teacher, init = make_models(x)
    kd_teacher = accel.prepare_model(copy.deepcopy(teacher), KDLAB_ACCEL)
    # the plain-loop user holds the float dataset; kdlab keeps uint8 and scales per batch
    x_float = prepare_inputs(x) if kind == "plain_distill" else x
    gc.collect()
    if kind.startswith("kdlab"):  # as `kdlab run`; the plain loop keeps the C library's default.
        accel.tune_host_allocator()  # After loading: memory freed by the loading is not kept.
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    ready = status_mb("VmRSS")
    if kind == "plain_distill":
        plain.train(fresh_student(x, init), x_float, y, teacher=teacher, epochs=1)
    elif kind == "kdlab_scratch":
        kdlab_scratch(x, y, init, 1, 32)
    else:
        kdlab_distill(kd_teacher, x, y, init, 1, 32, build_cache(kd_teacher, x)[0])
    return {"peak_mb": status_mb("VmHWM"), "ready_mb": ready}


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``: peak since the last reset) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="use 10%% of the training data (a first check)")
    ap.add_argument("--fraction", type=float, default=None, help="share of the training data (default 1, quick 0.1)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each distillation / scratch run")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for every run")
    ap.add_argument("--name", default=None, help="results file name (default <dataset>-full or -quick)")
    ap.add_argument("--compare-epochs", type=int, default=None, help="epochs per compared method (default --epochs)")
    ap.add_argument("--skip-compare", action="store_true", help="leave out compare_vs_plain_loop (the longest)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(run_memory_child(args.memory_child, args.fraction or 1.0)), flush=True)
        return {}
    allocator = accel.tune_host_allocator()  # as `kdlab run` on the CPU; for both sides (process-wide)
    fraction = args.fraction if args.fraction is not None else (0.1 if args.quick else 1.0)
    dataset, x, y = load_data(fraction)
    x_float = prepare_inputs(x)  # what the plain-loop user holds
    teacher, init = make_models(x)
    # kdlab's side gets its own copy of the teacher in kdlab's memory format; the plain loop keeps
    # the user's model as it is.
    kd_teacher = accel.prepare_model(copy.deepcopy(teacher), KDLAB_ACCEL)
    epochs = args.epochs
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    say(f"kdlab benchmark: {dataset}, {len(y)} training samples, {epochs} epochs, {args.threads} threads")
    load_start = os.getloadavg()
    runs: dict[str, Any] = {}

    # 1. One distillation: plain loop vs kdlab (cache build included), and kdlab scratch; peak RSS.
    # Timed runs have no memory sampler running beside them (its thread would steal time from
    # the training threads); memory is measured afterwards in separate one-epoch runs.
    runs["plain_distill"] = plain.train(fresh_student(x, init), x_float, y, teacher=teacher, epochs=epochs)
    say(f"  plain loop, distill : {runs['plain_distill']['samples_per_s']:8.0f} samples/s")
    runs["kdlab_scratch"] = kdlab_scratch(x, y, init, epochs, 32)
    say(f"  kdlab, scratch      : {runs['kdlab_scratch']['samples_per_s']:8.0f} samples/s")
    cache, cache_seconds = build_cache(kd_teacher, x)
    runs["kdlab_distill"] = kdlab_distill(kd_teacher, x, y, init, epochs, 32, cache)
    runs["kdlab_distill"]["cache_build_seconds"] = cache_seconds
    rate = runs["kdlab_distill"]["samples_per_s"]
    say(f"  kdlab, distill      : {rate:8.0f} samples/s (cache {cache_seconds:.1f} s)")
    runs["plain_scratch"] = plain.train(fresh_student(x, init), x_float, y, epochs=max(1, epochs // 2))
    say(f"  plain loop, scratch : {runs['plain_scratch']['samples_per_s']:8.0f} samples/s")

    ratios: dict[str, float] = {
        "distill_vs_scratch": runs["kdlab_distill"]["samples_per_s"] / runs["kdlab_scratch"]["samples_per_s"],
        "vs_plain_loop": runs["plain_distill"]["seconds"] / (cache_seconds + runs["kdlab_distill"]["seconds"]),
        "plain_distill_vs_scratch": runs["plain_distill"]["samples_per_s"] / runs["plain_scratch"]["samples_per_s"],
    }
    # Memory: each phase in a fresh child process (kdlab keeps freed memory for reuse, so within
    # this process every phase would report the peak of the phases before it).
    mem = {
        kind: memory_child(kind, fraction, args.threads) for kind in ("plain_distill", "kdlab_scratch", "kdlab_distill")
    }
    memory = {
        **{f"{kind}_peak_rss_mb": m["peak_mb"] for kind, m in mem.items()},
        **{f"{kind}_growth_mb": m["peak_mb"] - m["ready_mb"] for kind, m in mem.items()},
        **{f"{kind}_max_peak_rss_mb": m["max_peak_mb"] for kind, m in mem.items()},
        "kdlab_distill_vs_scratch_peak_rss": mem["kdlab_distill"]["peak_mb"] / mem["kdlab_scratch"]["peak_mb"],
        "cache_mb": cache.logits.numel() * cache.logits.element_size() / 2**20,
    }

    # 2. Four methods on one teacher: four plain distillations vs one cache + four kdlab fits.
    if not args.skip_compare:
        plain_s = 0.0
        cache4, kdlab_s = build_cache(kd_teacher, x)  # kdlab pays the teacher once, for all four
        cache4_seconds = kdlab_s
        ce = args.compare_epochs or epochs
        per_method: dict[str, dict[str, float]] = {}
        for method, options in methods():
            t = options.get("temperature", TEMPERATURE)
            p = plain.train(fresh_student(x, init), x_float, y, teacher=teacher, epochs=ce, temperature=t)["seconds"]
            kd = kdlab_distill(kd_teacher, x, y, init, ce, 32, cache4, method, options)
            k = kd["seconds"]
            per_method[f"{method} T={t:g}"] = {
                "plain_seconds": p,
                "kdlab_seconds": k,
                "kdlab_samples_per_s": kd["samples_per_s"],
                "kdlab_cpu_ms_per_sample": 1e3 * kd["cpu_seconds"] / (ce * len(y)),
            }
            plain_s, kdlab_s = plain_s + p, kdlab_s + k
        runs["compare"] = {
            "methods": methods(),
            "epochs": ce,
            "plain_seconds": plain_s,
            "kdlab_seconds": kdlab_s,
            "cache_build_seconds": cache4_seconds,
            "per_method": per_method,
        }
        ratios["compare_vs_plain_loop"] = plain_s / kdlab_s
        cpu = statistics.mean(m["kdlab_cpu_ms_per_sample"] for m in per_method.values())
        distill_cpu = 1e3 * runs["kdlab_distill"]["cpu_seconds"] / (epochs * len(y))
        say(
            f"  compare, 4 methods  : plain {plain_s:.1f} s, kdlab {kdlab_s:.1f} s (kdlab CPU {cpu:.3f} ms/sample; "
            f"distill phase {distill_cpu:.3f})"
        )

    # 3. Scaling with the batch size (1 epoch each; batch 32 from the runs above).
    scaling: dict[str, dict[str, float]] = {
        "32": {
            "kdlab_distill": runs["kdlab_distill"]["samples_per_s"],
            "kdlab_scratch": runs["kdlab_scratch"]["samples_per_s"],
            "plain_distill": runs["plain_distill"]["samples_per_s"],
        }
    }
    for batch in (128, 512):
        scaling[str(batch)] = {
            "kdlab_distill": kdlab_distill(kd_teacher, x, y, init, 1, batch, cache)["samples_per_s"],
            "kdlab_scratch": kdlab_scratch(x, y, init, 1, batch)["samples_per_s"],
            "plain_distill": plain.train(
                fresh_student(x, init), x_float, y, teacher=teacher, epochs=1, batch_size=batch
            )["samples_per_s"],
        }

    result = {
        "name": args.name or f"{dataset}-{'quick' if fraction < 1 else 'full'}",
        "kdlab_version": __version__,
        "dataset": dataset,
        "train_samples": len(y),
        "epochs": epochs,
        "batch_size": 32,
        "threads": args.threads,
        "machine": machine(allocator, load_start),
        "ratios": ratios,
        "targets": TARGETS,
        "memory": memory,
        "scaling_samples_per_s": scaling,
        "runs": runs,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result['name']}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    report(result, say)
    say(f"results: {path}")
    return result


def report(result: dict[str, Any], say: Any) -> None:
    say("")
    for key, value in result["ratios"].items():
        target = TARGETS.get(key)
        verdict = "" if target is None else f"(target >= {target}: {'met' if value >= target else 'NOT met'})"
        say(f"{key:<26} {value:6.2f}x {verdict}")
    mem = result["memory"]
    say(
        f"{'peak RSS distill/scratch':<26} {mem['kdlab_distill_vs_scratch_peak_rss']:6.2f}x "
        f"({mem['kdlab_distill_peak_rss_mb']:.0f} MB vs {mem['kdlab_scratch_peak_rss_mb']:.0f} MB; "
        f"cache {mem['cache_mb']:.1f} MB)"
    )
    say(
        f"{'RSS growth in the epoch':<26} plain distill {mem['plain_distill_growth_mb']:.0f} MB, kdlab scratch "
        f"{mem['kdlab_scratch_growth_mb']:.0f} MB, kdlab distill {mem['kdlab_distill_growth_mb']:.0f} MB "
        f"(median of 3 fresh processes, after loading data and models)"
    )
    for batch, row in result["scaling_samples_per_s"].items():
        cells = ", ".join(f"{k} {v:,.0f}" for k, v in row.items())
        say(f"{'samples/s @ batch ' + batch:<26} {cells}")


if __name__ == "__main__":
    main()
