"""The classic lab at its real size (224×224, the cats-vs-dogs preset's CNNs): kdlab against the
plain PyTorch loop and against the lab written in Keras 3, in one run on one generated image folder.

    python -m benchmarks.lab224            # full: 2,000 JPEGs decoded, 640 trained on, 5 epochs (8-12 min on 2 cores)
    python -m benchmarks.lab224 --quick    # 256 JPEGs, 128 trained on, 1 epoch (a first check)

The folder (``--folder``, else a temporary one) holds ``--images`` real 224 px JPEG files in two
classes (:func:`benchmarks.timm_cache.write_images`), so decoding costs what it costs. Models:
``lab-cnn-teacher`` (9,568,898 parameters) and ``lab-cnn-student`` (789,442) at 3×224×224, 2 classes,
randomly initialized (speed does not depend on the weights), batch 32, Adam 1e-3, α 0.05, T 5, no T².
Every phase trains on the same first ``--train`` decoded images (a fixed number of steps per epoch:
``--train``/32) with the same threads; the plain loop starts from kdlab's initial weights.

Phases, timed in this process (no memory sampler beside them), host allocator set once for all
(as ``benchmarks.run``: the ratios measure the loops, not the allocator):

* decode: ``--images`` files through kdlab's image-folder loader on first load (a fresh decode
  cache: ``build_data`` with ``data.name=image-folder``, whatever parallelism the loader has), and
  a one-process Pillow loop over the same files (open, RGB, resize, into one uint8 array), in
  ``--decode-repeats`` pairs, each pair in a fresh process as a user's first run is (the median
  pair's ratio is reported, every pair is kept); beside them the loader's parallel decode alone
  (``decode_to_file``: the files into the cache file, without listing, hashing or reading the
  splits into memory). ``--decode-only`` stops there (``benchmarks/results/lab224-decode.json``);
* kdlab teacher: ``fit`` of the teacher, one epoch of ``--teacher-train`` images (ms/step only);
* kdlab scratch: ``fit`` of the student, ``--epochs`` epochs;
* kdlab distill: the teacher cache built from scratch over the training images (counted in full),
  then ``Distiller.fit`` with the cache, ``--epochs`` epochs;
* plain loop: ``benchmarks.plain.train`` (``DataLoader`` over the decoded images as one float tensor,
  teacher forward every step, KD loss inline), ``--epochs`` epochs;
* Keras: ``benchmarks.keras_lab`` in a child process (``KERAS_BACKEND=torch``): the lab's Sequential
  CNNs and Distiller, teacher forward every step, ``--epochs`` epochs on the same images.

Ratios (higher is better for kdlab):

* ``distill_vs_scratch``: kdlab distillation samples/s ÷ kdlab scratch samples/s (cache built; target ≥ 0.9);
* ``vs_plain_loop``: plain-loop distillation seconds ÷ (kdlab cache build + distillation seconds) (≥ 1.8);
* ``vs_keras``: Keras distillation seconds ÷ (kdlab cache build + distillation seconds) (≥ 2.5);
* ``decode_vs_pillow``: images/s of kdlab's first load ÷ one-process Pillow images/s (≥ 1.7 on 2 cores).

``--epochs`` defaults to the preset's 5 student epochs (the lab's own). With another value the run
also gives ``projected_at_preset_epochs``: from the same run's per-epoch seconds,
``5 × plain (or Keras) epoch ÷ (cache build + 5 × kdlab distillation epoch)``.

Peak RSS per phase: each kdlab / plain phase again in a fresh child process (``--memory-child``),
from the moment data and models are loaded (``/proc/self/clear_refs``), over ``--memory-steps``
steps (the distillation child builds its cache over all training images first); Keras reports its
own from its child. Results: ``benchmarks/results/lab224.json`` (``--out``). Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# kdlab's OpenMP wait policy (what `import kdlab` sets) before torch loads, for every phase of this
# process and the children: on shared cores a spinning wait makes every loop many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks import plain
from benchmarks.child import ROOT, machine, run_child
from benchmarks.run import build_cache
from benchmarks.timm_cache import write_images
from kdlab import Distiller
from kdlab.config.schema import DataConfig
from kdlab.data.bundle import build_data
from kdlab.data.images import IMAGE_SUFFIXES, _list_files, decode_folder, decode_to_file, decode_workers
from kdlab.data.tensors import TensorLoader, prepare_inputs
from kdlab.models import create_model
from kdlab.train import accel, teacher_cache
from kdlab.train.loop import fit
from kdlab.version import __version__

SIZE, BATCH, CLASSES = 224, 32, 2
ALPHA, TEMPERATURE = 0.05, 5.0  # the cats-vs-dogs preset's (the classic lab's) settings
KDLAB_ACCEL = accel.plan(torch.device("cpu"))
TARGETS = {"distill_vs_scratch": 0.9, "vs_plain_loop": 1.8, "vs_keras": 2.5, "decode_vs_pillow": 1.7}
PRESET_EPOCHS = 5  # cats-vs-dogs: the students' epochs
SEED_GPU_MS = {"teacher": 95, "scratch": 64, "distill": 74}  # the classic lab's step times (GPU, batch 32)
RESULTS = Path(__file__).parent / "results"


def image_files(root: Path) -> list[Path]:
    """The folder's image files in kdlab's order (class folders sorted, files sorted)."""
    return [p for c in sorted(d for d in root.iterdir() if d.is_dir()) for p in sorted(c.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES]  # fmt: skip


def pillow_decode(files: list[Path]) -> tuple[np.ndarray, float]:
    """One process, Pillow: open, convert to RGB, bilinear resize to 224, into one uint8 array."""
    from PIL import Image

    out = np.empty((len(files), SIZE, SIZE, 3), dtype=np.uint8)
    start = time.perf_counter()
    for i, path in enumerate(files):
        with Image.open(path) as img:
            out[i] = np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return out, time.perf_counter() - start


def decode_pairs(folder: Path, files: list[Path], cache: Path, repeats: int) -> dict[str, Any]:
    """``repeats`` pairs, each in a fresh process as a user's first run is (one-process Pillow, then
    kdlab's first load into a fresh decode cache ``cache``), then the parallel decode alone in
    another; the median pair by ratio is reported, every pair is kept."""
    import shutil

    pairs = []
    for _ in range(repeats):
        shutil.rmtree(cache, ignore_errors=True)
        pairs.append(run_child("benchmarks.lab224", ["--decode-child", "pair", "--folder", str(folder),
                                                     "--cache", str(cache)]))  # fmt: skip
        pairs[-1]["ratio"] = pairs[-1]["pillow_seconds"] / pairs[-1]["kdlab_seconds"]
    mid = sorted(pairs, key=lambda p: p["ratio"])[len(pairs) // 2]
    alone = run_child("benchmarks.lab224", ["--decode-child", "alone", "--folder", str(folder), "--cache", str(cache)])
    return {
        "images": len(files),
        "repeats": repeats,
        "workers": decode_workers(),
        "pillow_one_process_seconds": mid["pillow_seconds"],
        "pillow_images_per_s": len(files) / mid["pillow_seconds"],
        "kdlab_first_load_seconds": mid["kdlab_seconds"],
        "kdlab_images_per_s": len(files) / mid["kdlab_seconds"],
        "kdlab_decoded": mid["decoded"],
        "ratio": mid["ratio"],
        "pairs": pairs,
        "decode_to_file_seconds": alone["seconds"],
        "decode_to_file_images_per_s": len(files) / alone["seconds"],
    }


def run_decode_child(kind: str, folder: Path, cache: Path) -> dict[str, Any]:
    """In a fresh process: ``pair`` = Pillow over the folder, then kdlab's first load into ``cache``;
    ``alone`` = the parallel decode of the folder into a file in a temporary folder beside ``cache``."""
    accel.tune_host_allocator()  # as `kdlab run` on the CPU
    files = image_files(folder)
    if kind == "alone":
        listing = _list_files(folder, sorted(d.name for d in folder.iterdir() if d.is_dir()))
        with tempfile.TemporaryDirectory(dir=cache.parent) as scratch:
            start = time.perf_counter()
            decode_to_file(listing, SIZE, Path(scratch) / "decoded.npy")
            return {"seconds": time.perf_counter() - start}
    _, pillow_s = pillow_decode(files)
    start = time.perf_counter()
    bundle = build_data(data_config(folder, cache), seed=0)
    kdlab_s = time.perf_counter() - start
    decoded = len(bundle.train) + len(bundle.val) + len(bundle.test)
    return {"pillow_seconds": pillow_s, "kdlab_seconds": kdlab_s, "decoded": decoded, "load_average": os.getloadavg()}


def data_config(folder: Path, cache: Path) -> DataConfig:
    return DataConfig(name="image-folder", path=folder, image_size=SIZE, cache_dir=cache)


def load_decoded(folder: Path, cache: Path, train: int) -> tuple[Tensor, Tensor]:
    """The decoded pool (a decode-cache hit after the first load): its first ``train`` images, labels."""
    cfg = data_config(folder, cache)
    x, y, _ = decode_folder(folder, sorted(d.name for d in folder.iterdir() if d.is_dir()), SIZE, cfg)
    # the listing holds class a's files, then b's: interleave them so the first `train` rows hold both
    order = np.argsort(np.arange(len(y)) % (len(y) // 2), kind="stable")[:train]
    idx = torch.from_numpy(order)
    return x[idx].contiguous(), torch.from_numpy(np.asarray(y))[idx].contiguous()  # a tensor, mapped or not


def make_models() -> tuple[nn.Module, dict[str, Tensor]]:
    shape = (3, SIZE, SIZE)
    torch.manual_seed(0)
    teacher = create_model("lab-cnn-teacher", num_classes=CLASSES, input_shape=shape).eval()
    torch.manual_seed(1)
    student = create_model("lab-cnn-student", num_classes=CLASSES, input_shape=shape)
    return teacher, {k: v.clone() for k, v in student.state_dict().items()}


def fresh_student(init: dict[str, Tensor], *, kdlab: bool = False) -> nn.Module:
    """The student at its initial weights; kdlab's side in kdlab's CPU memory format (channels-last)."""
    student = create_model("lab-cnn-student", num_classes=CLASSES, input_shape=(3, SIZE, SIZE))
    student.load_state_dict(init)
    return accel.prepare_model(student, KDLAB_ACCEL) if kdlab else student


def timed(seconds: float, samples: int, epochs: int) -> dict[str, float]:
    return {
        "seconds": seconds,
        "samples_per_s": epochs * samples / seconds,
        "ms_per_step": 1e3 * seconds / (epochs * -(-samples // BATCH)),
        "epochs": epochs,
    }


def kdlab_teacher(teacher: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    model = accel.prepare_model(copy.deepcopy(teacher), KDLAB_ACCEL).train()
    start = time.perf_counter()
    fit(model, TensorLoader(x, y, batch_size=BATCH, shuffle=True, seed=0), epochs=1, seed=0, verbose=0)
    return timed(time.perf_counter() - start, len(y), 1)


def kdlab_scratch(x: Tensor, y: Tensor, init: dict[str, Tensor], epochs: int) -> dict[str, float]:
    student = fresh_student(init, kdlab=True)
    start = time.perf_counter()
    fit(student, TensorLoader(x, y, batch_size=BATCH, shuffle=True, seed=0), epochs=epochs, seed=0, verbose=0)
    return timed(time.perf_counter() - start, len(y), epochs)


def kdlab_distill(
    teacher: nn.Module, x: Tensor, y: Tensor, init: dict[str, Tensor], epochs: int, cache: teacher_cache.TeacherCache
) -> dict[str, float]:
    d = Distiller(teacher=teacher, student=fresh_student(init, kdlab=True), alpha=ALPHA, temperature=TEMPERATURE,
                  t_squared=False)  # fmt: skip
    start = time.perf_counter()
    d.fit(TensorLoader(x, y, batch_size=BATCH, shuffle=True, seed=0), epochs=epochs, seed=0, teacher_fn=cache,
          verbose=0)  # fmt: skip
    return timed(time.perf_counter() - start, len(y), epochs)


def plain_distill(
    teacher: nn.Module, x_float: Tensor, y: Tensor, init: dict[str, Tensor], epochs: int
) -> dict[str, float]:
    r = plain.train(fresh_student(init), x_float, y, teacher=teacher, epochs=epochs, alpha=ALPHA,
                    temperature=TEMPERATURE)  # fmt: skip
    return timed(r["seconds"], len(y), epochs)


def keras_child(x: Tensor, y: Tensor, epochs: int, threads: int, work: Path) -> dict[str, Any]:
    """The Keras lab in its own process (channels-last uint8 images written to ``work``)."""
    np.save(work / "keras-x.npy", x.permute(0, 2, 3, 1).contiguous().numpy())
    np.save(work / "keras-y.npy", y.numpy())
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    args = ["--data", str(work / "keras-x.npy"), "--labels", str(work / "keras-y.npy")]
    cmd = [sys.executable, "-m", "benchmarks.keras_lab", *args, "--epochs", str(epochs), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise SystemExit(
            f"error: the Keras child failed (is keras>=3.0 installed? pip install '.[bench]'):\n{out.stderr[-2000:]}"
        )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(timed(result["seconds"], len(y), epochs))
    return result


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``: peak since the last reset) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_memory_child(kind: str, folder: Path, cache: Path, train: int, steps: int) -> dict[str, float]:
    """Peak RSS of ``kind`` over ``steps`` steps, from the moment data and models are loaded."""
    x, y = load_decoded(folder, cache, train)
    teacher, init = make_models()
    kd_teacher = accel.prepare_model(copy.deepcopy(teacher), KDLAB_ACCEL)
    n = min(len(y), steps * BATCH)
    # the plain-loop user holds the decoded images as one float tensor; kdlab keeps uint8
    x_float = prepare_inputs(x.clone()) if kind == "plain_distill" else x
    gc.collect()
    accel.tune_host_allocator()  # as in the timed phases (the plain loop ran under it too)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    ready = status_mb("VmRSS")
    if kind == "plain_distill":
        plain_distill(teacher, x_float[:n], y[:n], init, 1)
    elif kind == "kdlab_teacher":
        kdlab_teacher(teacher, x[:n], y[:n])
    elif kind == "kdlab_scratch":
        kdlab_scratch(x[:n], y[:n], init, 1)
    else:  # the cache over every training image, then the steps
        cache_all, _ = build_cache(kd_teacher, x)
        kdlab_distill(kd_teacher, x[:n], y[:n], init, 1, cache_all)  # rows 0..n-1 of the cache are x[:n]'s
    return {"peak_mb": status_mb("VmHWM"), "ready_mb": ready}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()  # fmt: skip
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="256 images, 128 trained on, 1 epoch (a first check)")
    ap.add_argument("--images", type=int, default=None, help="JPEGs written and decoded (default 2000, quick 256)")
    ap.add_argument("--train", type=int, default=None, help="images every training phase uses (default 640, quick 128)")
    ap.add_argument(
        "--teacher-train", type=int, default=None, help="images of the teacher phase (default 320, quick 64)"
    )
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the scratch, distill, plain and Keras phases "
                    f"(default the preset's {PRESET_EPOCHS}, quick 1)")  # fmt: skip
    ap.add_argument("--decode-repeats", type=int, default=None, help="Pillow / first-load pairs (default 3, quick 1)")
    ap.add_argument("--memory-steps", type=int, default=None, help="steps of each peak-RSS child (default 8, quick 2)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads for every phase")
    ap.add_argument("--folder", type=Path, default=None, help="image folder to write into (default: a temporary one)")
    ap.add_argument("--no-keras", action="store_true", help="leave out the Keras phase")
    ap.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/lab224.json)")
    ap.add_argument("--decode-only", action="store_true", help="only the decoding pairs (results: lab224-decode.json)")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--decode-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    q = args.quick
    images = args.images or (256 if q else 2000)
    train = min(images, args.train or (128 if q else 640))
    teacher_train = min(train, args.teacher_train or (64 if q else 320))
    epochs = args.epochs or (1 if q else PRESET_EPOCHS)
    repeats = max(1, args.decode_repeats or (1 if q else 3))
    memory_steps = args.memory_steps or (2 if q else 8)
    if args.decode_child:
        assert args.folder is not None and args.cache is not None
        print(json.dumps(run_decode_child(args.decode_child, args.folder, args.cache)), flush=True)
        return {}
    if args.memory_child:
        assert args.folder is not None and args.cache is not None
        print(json.dumps(run_memory_child(args.memory_child, args.folder, args.cache, train, memory_steps)), flush=True)
        return {}
    say = lambda msg: print(msg, flush=True)  # noqa: E731
    load_start = os.getloadavg()
    allocator = accel.tune_host_allocator()  # as `kdlab run` on the CPU; for both sides (process-wide)
    with tempfile.TemporaryDirectory(prefix="kdlab-lab224-") as tmp:
        work = Path(tmp)
        folder = args.folder or work / "images"
        cache = work / "decode-cache"
        start = time.perf_counter()
        if not (folder.is_dir() and len(image_files(folder)) == images):
            write_images(folder, images, SIZE)
        write_seconds = time.perf_counter() - start
        files = image_files(folder)
        say(f"kdlab lab224: {len(files)} JPEGs of {SIZE} px in {folder} ({write_seconds:.1f} s to write), "
            f"{train} trained on, {epochs} epochs, {args.threads} threads")  # fmt: skip

        # 1. Decoding, in pairs, each in a fresh process: one-process Pillow, then kdlab's loader on
        # first load (a fresh decode cache each time); then the parallel decode alone.
        decode = decode_pairs(folder, files, cache, repeats)
        say(f"  decode: Pillow {decode['pillow_images_per_s']:.0f} images/s, kdlab first load "
            f"{decode['kdlab_images_per_s']:.0f} images/s, parallel decode alone "
            f"{decode['decode_to_file_images_per_s']:.0f} images/s (median of {repeats})")  # fmt: skip
        if args.decode_only:
            out = args.out or RESULTS / "lab224-decode.json"
            out.write_text(json.dumps({
                "name": "lab224-decode",
                "command": "python -m benchmarks.lab224 " + " ".join(argv if argv is not None else sys.argv[1:]),
                "commit": git_commit(),
                "machine": machine(allocator, load_start),
                "decode_vs_pillow": decode["ratio"],
                "target": TARGETS["decode_vs_pillow"],
                "decode": decode,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }, indent=2) + "\n", encoding="utf-8")  # fmt: skip
            ratios = ", ".join(f"{p['ratio']:.2f}" for p in decode["pairs"])
            say(f"decode_vs_pillow {decode['ratio']:.2f}x (pairs {ratios}; target >= {TARGETS['decode_vs_pillow']})")
            say(f"results: {out}")
            return {"decode": decode}

        x, y = load_decoded(folder, cache, train)
        teacher, init = make_models()
        kd_teacher = accel.prepare_model(copy.deepcopy(teacher), KDLAB_ACCEL)
        runs: dict[str, Any] = {}
        # 2. Training phases. kdlab first (teacher, scratch, distill), then the plain loop, then Keras.
        runs["kdlab_teacher"] = kdlab_teacher(teacher, x[:teacher_train], y[:teacher_train])
        say(f"  kdlab teacher : {runs['kdlab_teacher']['ms_per_step']:7.0f} ms/step")
        runs["kdlab_scratch"] = kdlab_scratch(x, y, init, epochs)
        say(f"  kdlab scratch : {runs['kdlab_scratch']['ms_per_step']:7.0f} ms/step")
        cache_t, cache_s = build_cache(kd_teacher, x)
        runs["kdlab_distill"] = kdlab_distill(kd_teacher, x, y, init, epochs, cache_t)
        runs["kdlab_distill"]["cache_build_seconds"] = cache_s
        runs["kdlab_distill"]["phase_seconds"] = cache_s + runs["kdlab_distill"]["seconds"]
        say(f"  kdlab distill : {runs['kdlab_distill']['ms_per_step']:7.0f} ms/step (cache {cache_s:.1f} s)")
        x_float = prepare_inputs(x.clone())  # what the plain-loop user holds: the decoded images as floats
        runs["plain_distill"] = plain_distill(teacher, x_float, y, init, epochs)
        del x_float
        say(f"  plain loop    : {runs['plain_distill']['ms_per_step']:7.0f} ms/step")
        if not args.no_keras:
            runs["keras_distill"] = keras_child(x, y, epochs, args.threads, work)
            say(f"  Keras 3       : {runs['keras_distill']['ms_per_step']:7.0f} ms/step")
        kd_phase = runs["kdlab_distill"]["phase_seconds"]
        ratios = {
            "distill_vs_scratch": runs["kdlab_distill"]["samples_per_s"] / runs["kdlab_scratch"]["samples_per_s"],
            "vs_plain_loop": runs["plain_distill"]["seconds"] / kd_phase,
            "decode_vs_pillow": decode["ratio"],
        }
        if "keras_distill" in runs:
            ratios["vs_keras"] = runs["keras_distill"]["seconds"] / kd_phase
        # Run at other than the preset's 5 epochs: the same per-epoch times at 5, the cache paid once.
        projected: dict[str, float] = {}
        if epochs != PRESET_EPOCHS:
            per_epoch = {
                k: runs[k]["seconds"] / epochs for k in ("kdlab_distill", "plain_distill", "keras_distill") if k in runs
            }
            kd5 = cache_s + PRESET_EPOCHS * per_epoch.pop("kdlab_distill")
            projected = {f"{k.split('_')[0]}_vs_kdlab": PRESET_EPOCHS * v / kd5 for k, v in per_epoch.items()}

        # 3. Peak RSS per phase, each in a fresh process.
        child_args = ["--folder", str(folder), "--cache", str(cache), "--images", str(images), "--train", str(train),
                      "--memory-steps", str(memory_steps), "--threads", str(args.threads)]  # fmt: skip
        memory: dict[str, Any] = {"steps": memory_steps}
        for kind in ("kdlab_teacher", "kdlab_scratch", "kdlab_distill", "plain_distill"):
            m = run_child("benchmarks.lab224", ["--memory-child", kind, *child_args])
            memory[f"{kind}_peak_rss_mb"] = m["peak_mb"]
            memory[f"{kind}_growth_mb"] = m["peak_mb"] - m["ready_mb"]
        if "keras_distill" in runs:
            memory["keras_distill_peak_rss_mb"] = runs["keras_distill"]["peak_rss_mb"]
        memory["decoded_training_images_mb"] = x.numel() / 2**20

    result = {
        "name": "lab224-quick" if q else "lab224",
        "command": "python -m benchmarks.lab224 " + " ".join(argv if argv is not None else sys.argv[1:]),
        "commit": git_commit(),
        "kdlab_version": __version__,
        "images": len(files),
        "train_samples": train,
        "teacher_train_samples": teacher_train,
        "epochs": epochs,
        "batch_size": BATCH,
        "threads": args.threads,
        "machine": machine(allocator, load_start, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")),
        "ratios": ratios,
        **({"projected_at_preset_epochs": {"epochs": PRESET_EPOCHS, **projected}} if projected else {}),
        "targets": TARGETS,
        "seed_gpu_ms_per_step": SEED_GPU_MS,
        "decode": decode,
        "memory": memory,
        "runs": runs,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    path = args.out or RESULTS / ("lab224-quick.json" if q else "lab224.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    say("")
    for key, value in ratios.items():
        verdict = f"(target >= {TARGETS[key]}: {'met' if value >= TARGETS[key] else 'NOT met'})"
        say(f"{key:<20} {value:6.2f}x {verdict}")
    say("peak RSS (MB)        " + ", ".join(f"{k.removesuffix('_peak_rss_mb')} {v:.0f}" for k, v in memory.items()
                                         if k.endswith("_peak_rss_mb")))  # fmt: skip
    if projected:
        say(
            f"at the preset's {PRESET_EPOCHS} epochs (same per-epoch times, cache once): "
            + ", ".join(f"{k} {v:.2f}x" for k, v in projected.items())
        )
    end = result["machine"]["load_average_end"][0]
    say(f"load average         {load_start[0]:.1f} at the start, {end:.1f} at the end")
    say(f"results: {path}")
    return result


if __name__ == "__main__":
    main()
