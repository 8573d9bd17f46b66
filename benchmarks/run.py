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
* peak RSS of the distillation phase vs the scratch phase, and samples/s at batch 32/128/512.

Results go to ``benchmarks/results/<name>.json``. Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks import plain
from kdlab import Distiller, __version__, accel, teacher_cache
from kdlab.config.schema import DataConfig
from kdlab.data.bundle import build_data
from kdlab.data.tensors import TensorLoader
from kdlab.loop import fit
from kdlab.models import create_model
from kdlab.objective import METHODS

RESULTS = Path(__file__).parent / "results"
KDLAB_ACCEL = accel.plan(torch.device("cpu"))  # what `kdlab run` uses on this device
TARGETS = {"distill_vs_scratch": 0.9, "vs_plain_loop": 1.8, "compare_vs_plain_loop": 2.5}
ALPHA, TEMPERATURE = 0.05, 5.0  # the Fashion-MNIST preset's (the classic lab's) settings


class PeakRSS:
    """Samples this process's resident set size every 5 ms; ``peak_mb`` after the block."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self.start = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak / 2**20


def load_data(fraction: float) -> tuple[str, Tensor, Tensor]:
    """Fashion-MNIST's training split (uint8), or digits when Fashion-MNIST is not installed."""
    try:
        bundle = build_data(DataConfig(name="fashion-mnist", val_fraction=0.1), seed=0)
    except Exception:
        bundle = build_data(DataConfig(name="digits"), seed=0)
    x, y = bundle.train.x, bundle.train.y
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
    start = time.perf_counter()
    fit(student, loader, epochs=epochs, seed=0)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples_per_s": epochs * len(y) / seconds, "epochs": epochs}


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
    start = time.perf_counter()
    d.fit(loader, epochs=epochs, seed=0, teacher_fn=cache)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples_per_s": epochs * len(y) / seconds, "epochs": epochs}


def build_cache(teacher: nn.Module, x: Tensor) -> tuple[teacher_cache.TeacherCache, float]:
    """A cache built from scratch (a fresh folder: never a hit), and the seconds it took."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        cache, record = teacher_cache.build(teacher, x, cache_dir=Path(folder))
        seconds = time.perf_counter() - start
    assert record.status == "miss"
    return cache, seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="use 10%% of the training data (a first check)")
    ap.add_argument("--fraction", type=float, default=None, help="share of the training data (default 1, quick 0.1)")
    ap.add_argument("--epochs", type=int, default=5, help="epochs of each distillation / scratch run")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for every run")
    ap.add_argument("--name", default=None, help="results file name (default <dataset>-full or -quick)")
    ap.add_argument("--compare-epochs", type=int, default=None, help="epochs per compared method (default --epochs)")
    ap.add_argument("--skip-compare", action="store_true", help="leave out compare_vs_plain_loop (the longest)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fraction = args.fraction if args.fraction is not None else (0.1 if args.quick else 1.0)
    dataset, x, y = load_data(fraction)
    x_float = x.float() / 255.0 if x.dtype == torch.uint8 else x  # what the plain-loop user holds
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
    with PeakRSS() as mem_plain:
        plain.train(fresh_student(x, init), x_float, y, teacher=teacher, epochs=1)
    with PeakRSS() as mem_scratch:
        kdlab_scratch(x, y, init, 1, 32)
    with PeakRSS() as mem_distill:
        kdlab_distill(kd_teacher, x, y, init, 1, 32, build_cache(kd_teacher, x)[0])
    memory = {
        "plain_distill_peak_rss_mb": mem_plain.peak_mb,
        "kdlab_scratch_peak_rss_mb": mem_scratch.peak_mb,
        "kdlab_distill_peak_rss_mb": mem_distill.peak_mb,
        "kdlab_distill_vs_scratch_peak_rss": mem_distill.peak / mem_scratch.peak,
        # RSS never shrinks much once the allocator holds pages, so the growth within each phase
        # (peak minus RSS at its start; one epoch each, run in this order) is the fairer comparison.
        "plain_distill_growth_mb": (mem_plain.peak - mem_plain.start) / 2**20,
        "kdlab_scratch_growth_mb": (mem_scratch.peak - mem_scratch.start) / 2**20,
        "kdlab_distill_growth_mb": (mem_distill.peak - mem_distill.start) / 2**20,
        "cache_mb": cache.logits.numel() * cache.logits.element_size() / 2**20,
    }

    # 2. Four methods on one teacher: four plain distillations vs one cache + four kdlab fits.
    if not args.skip_compare:
        plain_s = 0.0
        cache4, kdlab_s = build_cache(kd_teacher, x)  # kdlab pays the teacher once, for all four
        ce = args.compare_epochs or epochs
        for method, options in methods():
            t = options.get("temperature", TEMPERATURE)
            plain_s += plain.train(fresh_student(x, init), x_float, y, teacher=teacher, epochs=ce, temperature=t)[
                "seconds"
            ]
            kdlab_s += kdlab_distill(kd_teacher, x, y, init, ce, 32, cache4, method, options)["seconds"]
        runs["compare"] = {"methods": methods(), "epochs": ce, "plain_seconds": plain_s, "kdlab_seconds": kdlab_s}
        ratios["compare_vs_plain_loop"] = plain_s / kdlab_s
        say(f"  compare, 4 methods  : plain {plain_s:.1f} s, kdlab {kdlab_s:.1f} s")

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
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
        },
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
        f"{'RSS growth in phase':<26} plain distill {mem['plain_distill_growth_mb']:.0f} MB, kdlab scratch "
        f"{mem['kdlab_scratch_growth_mb']:.0f} MB, kdlab distill {mem['kdlab_distill_growth_mb']:.0f} MB"
    )
    for batch, row in result["scaling_samples_per_s"].items():
        cells = ", ".join(f"{k} {v:,.0f}" for k, v in row.items())
        say(f"{'samples/s @ batch ' + batch:<26} {cells}")


if __name__ == "__main__":
    main()
