"""A timm CNN teacher at a realistic input size: what the teacher-logit cache buys.

A folder of ``--images`` real JPEG files (two classes, ``--size`` px, drawn so the classes differ)
is run through the lab with ``teacher.model=timm:<--teacher>`` and a small student, the teacher
trained for one epoch, the students for ``--epochs``. Measured in the same run and printed:

* ``distill_vs_scratch``: distilled epoch seconds ÷ scratch epoch seconds (history.csv, epochs
  after the first, median) — with the cache the distilled arm runs no teacher forward, so this
  should stay within 1.1;
* ``cache_pass``: images/s of the lab's one-off cache pass (results.json ``teacher_cache.build_seconds``) and of
  a plain ``model.eval()`` + ``torch.no_grad()`` loop over the same decoded training tensor, with
  the same teacher weights and batch size; their ratio (≈ 1 means the cache pass costs what any
  inference loop costs, once).

    python -m benchmarks.timm_cache                       # resnet18 teacher at 224 px, 512 images
    python -m benchmarks.timm_cache --images 128 --size 128 --quick

Results go to ``benchmarks/results/timm-cache-<teacher>-<size>.json``. Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config import load_experiment
from kdlab.lab.run import run_lab


def write_images(root: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` JPEGs in ``root/{a,b}``: class ``a`` has a bright disc, ``b`` a bright square, on noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        label = "ab"[i % 2]
        img = rng.integers(0, 120, size=(size, size, 3), dtype=np.uint8)
        cx, cy = rng.integers(size // 4, 3 * size // 4, size=2).tolist()
        r = int(rng.integers(size // 8, size // 4))
        mask = (
            ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r) if label == "a" else ((abs(xx - cx) <= r) & (abs(yy - cy) <= r))
        )
        img[mask] = rng.integers(180, 256, size=3, dtype=np.uint8)
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / label / f"{i:05d}.jpg", quality=90)


def plain_inference(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> float:
    """Images/s of the loop a user writes: eval mode, no_grad, batches sliced from one tensor (the
    decoded uint8 pixels scaled to [0, 1] per batch, as the lab's loader does)."""
    from kdlab.data.tensors import prepare_inputs

    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            model(prepare_inputs(x[i : i + batch_size]))
    return len(x) / (time.perf_counter() - start)


def epoch_seconds(run_dir: Path, arm: str) -> list[float]:
    with (run_dir / "history.csv").open(encoding="utf-8") as f:
        return [float(r["seconds"]) for r in csv.DictReader(f) if r["arm"] == arm]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet18", help="a timm model name")
    ap.add_argument("--student", default="lab-cnn-student", help="a model spec for the student")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="2 student epochs")
    args = ap.parse_args()
    epochs = 2 if args.quick else args.epochs
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        write_images(root, args.images, args.size)
        cfg = load_experiment(
            "cats-vs-dogs",
            [
                f"data.path={root}",
                f"data.image_size={args.size}",
                f"data.cache_dir={Path(tmp) / 'cache'}",
                f"distill.teacher_cache_dir={Path(tmp) / 'logits'}",  # a fresh cache: the pass is measured
                f"teacher.model=timm:{args.teacher}",
                "teacher.epochs=1",
                f"student.model={args.student}",
                f"student.epochs={epochs}",
                f"train.batch_size={args.batch_size}",
                f"train.eval_batch_size={args.batch_size}",
                "device=cpu",
                f"out={Path(tmp) / 'runs'}",
            ],
        )
        run_dir = run_lab(cfg)
        results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        cache = results.get("teacher_cache") or {}
        scratch = epoch_seconds(run_dir, "scratch")
        distilled = epoch_seconds(run_dir, "distilled")
        # Epochs after the first (warm-up), median; all epochs when there is only one.
        s_med = statistics.median(scratch[1:] or scratch)
        d_med = statistics.median(distilled[1:] or distilled)

        from kdlab.apps.predict import load_run
        from kdlab.data.bundle import build_data

        teacher = load_run(run_dir, arms=["teacher"]).models["teacher"]
        x = torch.as_tensor(build_data(cfg.data, cfg.seed).train.x[:])  # (a mapped split: its rows read)
        plain = plain_inference(teacher, x, cfg.train.eval_batch_size)
        built = cache.get("build_seconds")
        cache_rate = (cache.get("rows") or len(x)) / built if built else float("nan")

    out: dict[str, Any] = {
        "teacher": f"timm:{args.teacher}",
        "student": args.student,
        "images": args.images,
        "size": args.size,
        "batch_size": args.batch_size,
        "teacher_params": results["arms"]["teacher"].get("params"),
        "student_params": results["arms"]["scratch"].get("params"),
        "scratch_epoch_s": scratch,
        "distilled_epoch_s": distilled,
        "distill_vs_scratch": d_med / s_med,
        "cache": cache,
        "cache_pass_images_per_s": cache_rate,
        "plain_inference_images_per_s": plain,
        "cache_vs_plain": cache_rate / plain,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
    }
    print(f"teacher timm:{args.teacher} ({out['teacher_params']:,} params), student {args.student}, {args.size} px")
    print(f"distilled epoch / scratch epoch: {out['distill_vs_scratch']:.3f}  (target <= 1.1)")
    print(
        f"cache pass: {cache_rate:,.1f} img/s; plain eval+no_grad loop: {plain:,.1f} img/s; "
        f"ratio {out['cache_vs_plain']:.2f}"
    )
    dest = Path(__file__).parent / "results" / f"timm-cache-{args.teacher}-{args.size}.json"
    dest.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
