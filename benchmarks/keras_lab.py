"""The classic cats-vs-dogs lab in Keras 3 on its torch backend: the reference for ``benchmarks.lab224``.

Run as a child process (the Keras backend is chosen once per process, from ``KERAS_BACKEND``)::

    KERAS_BACKEND=torch python -m benchmarks.keras_lab --data x.npy --labels y.npy --epochs 2 --threads 2

``x.npy`` holds uint8 images ``[N, 224, 224, 3]`` (Keras' channels-last layout), ``y.npy`` int64
labels. The models are the lab's Sequential CNNs (valid padding; teacher 9,568,898 parameters,
student 789,442 at 224×224×3, 2 classes), each starting with a ``Rescaling(1/255)`` layer (the lab
scales pixels to [0, 1]; here it happens per batch, as kdlab's loader does). The ``Distiller`` is
the lab's: a ``keras.Model`` whose ``train_step`` runs the teacher forward (``training=False``) on
every step and trains the student on

    loss = α·CE(y, s) + (1 − α)·KL(softmax(t/T) ‖ softmax(s/T))     (α = 0.05, T = 5, no T²)

with Adam (lr 1e-3), batch 32, shuffled, written for the torch backend (``zero_grad``,
``backward``, ``optimizer.apply``). Prints one JSON line: seconds of each distillation epoch and
the peak RSS. Needs ``keras>=3.0`` (``pip install '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

ALPHA, TEMPERATURE = 0.05, 5.0


def build_models(size: int, classes: int = 2) -> tuple[Any, Any]:
    """The lab's teacher and student as ``keras.Sequential`` (valid padding, as in the lab)."""
    import keras
    from keras import layers

    def conv(width: int) -> list[Any]:
        return [layers.Conv2D(width, 3, activation="relu"), layers.MaxPooling2D(2)]

    scale = layers.Rescaling(1.0 / 255)
    teacher = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            scale,
            *conv(32),
            *conv(64),
            layers.Dropout(0.2),
            *conv(64),
            *conv(128),
            layers.Dropout(0.5),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(classes),
        ],
        name="teacher",
    )
    student = keras.Sequential(
        [keras.Input((size, size, 3)), layers.Rescaling(1.0 / 255), *conv(32), layers.Flatten(), layers.Dense(classes)],
        name="student",
    )
    return teacher, student


def make_distiller(teacher: Any, student: Any) -> Any:
    """The lab's Distiller (``keras.Model`` subclass), its ``train_step`` for the torch backend."""
    import keras
    import torch

    class Distiller(keras.Model):
        def __init__(self, student: Any, teacher: Any) -> None:
            super().__init__()
            self.student = student
            self.teacher = teacher
            self.teacher.trainable = False
            self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            self.kl = keras.losses.KLDivergence()
            self.loss_tracker = keras.metrics.Mean(name="loss")
            self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

        def call(self, x: Any, training: bool = False) -> Any:
            return self.student(x, training=training)

        @property
        def metrics(self) -> list[Any]:
            return [self.loss_tracker, self.accuracy]

        def train_step(self, data: Any) -> dict[str, Any]:
            x, y = data
            with torch.no_grad():
                t = self.teacher(x, training=False)  # the teacher, every step
            self.zero_grad()
            s = self.student(x, training=True)
            soft_t = keras.ops.softmax(t / TEMPERATURE, axis=1)
            soft_s = keras.ops.softmax(s / TEMPERATURE, axis=1)
            loss = ALPHA * self.ce(y, s) + (1 - ALPHA) * self.kl(soft_t, soft_s)
            loss.backward()
            weights = self.student.trainable_weights
            with torch.no_grad():
                self.optimizer.apply([w.value.grad for w in weights], weights)
            self.loss_tracker.update_state(loss)
            self.accuracy.update_state(y, s)
            return {"loss": self.loss_tracker.result(), "accuracy": self.accuracy.result()}

    return Distiller(student, teacher)


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="uint8 images [N, H, W, 3] (.npy)")
    ap.add_argument("--labels", required=True, help="int64 labels [N] (.npy)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import numpy as np

    from kdlab.train import accel  # before torch: kdlab's OpenMP wait policy, as in the kdlab process

    accel.tune_host_allocator()  # the same host allocator as the kdlab and plain-loop phases
    import keras
    import torch

    if keras.backend.backend() != "torch":
        raise SystemExit(f"error: KERAS_BACKEND is {keras.backend.backend()!r}; run with KERAS_BACKEND=torch")
    torch.set_num_threads(args.threads)
    x = np.load(args.data)
    y = np.load(args.labels)
    keras.utils.set_random_seed(0)
    teacher, student = build_models(x.shape[1], int(y.max()) + 1)
    distiller = make_distiller(teacher, student)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here (data and models loaded)

    class Clock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds.append(time.perf_counter() - self.start)

    clock = Clock()
    start = time.perf_counter()
    history = distiller.fit(x, y, batch_size=32, epochs=args.epochs, shuffle=True, verbose=0, callbacks=[clock])
    seconds = time.perf_counter() - start
    result = {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "teacher_params": int(teacher.count_params()),
        "student_params": int(student.count_params()),
        "samples": len(y),
        "epochs": args.epochs,
        "seconds": seconds,
        "epoch_seconds": clock.seconds,
        "samples_per_s": args.epochs * len(y) / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "final_loss": float(history.history["loss"][-1]),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
