"""The three-arm lab: teacher, student from scratch, distilled student — trained, evaluated and
recorded in one run folder. This module orchestrates; it contains no training or loss code.

Order of work and what is written when (every write atomic, results.json after each arm, so a
failure in a later arm never loses a finished one):

1. data loaded and split (seeded), model names, teacher checkpoint and distill settings checked —
   a bad input fails here, before anything is written;
2. run folder created, ``config.resolved.yaml`` and ``env.json`` written;
3. teacher trained (or loaded from ``teacher.checkpoint``), saved, evaluated on test;
4. scratch student trained with CE, saved, evaluated;
5. distilled student (same initial weights and data order as scratch) trained with
   α·CE + (1−α)·D against the frozen teacher, saved, evaluated;
6. ``plots/accuracy.png``, then ``results.json`` with status complete — written last, so a folder
   that says complete holds every file it promises.
"""

from __future__ import annotations

import contextlib
import copy
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config.schema import DistillConfig, ExperimentConfig
from kdlab.data.bundle import DataBundle, build_data
from kdlab.data.tensors import TensorLoader, prepare_inputs
from kdlab.data.text import save_vocab
from kdlab.errors import RunInterrupted, TrainingError
from kdlab.io import atomic_write_json, load_weights, save_weights
from kdlab.kd import losses
from kdlab.lab.recovery import RunLock, continue_results, mark_status, note_resume, read_history_rows, resume_command
from kdlab.lab.runtime import Runtime
from kdlab.models.registry import count_params, create_model
from kdlab.runs import create_run_dir, env_info, write_config, write_history, write_results
from kdlab.train import metrics, teacher_cache
from kdlab.train.checkpoint import ArmCheckpoint, FitState
from kdlab.train.distiller import Distiller
from kdlab.train.loop import History, Progress, fit, make_optimizer, predict
from kdlab.train.reproduce import deterministic_mode, repro_info
from kdlab.version import __version__

ARMS = ("teacher", "scratch", "distilled")


class _WeightFiles(dict[str, str]):
    """Arm -> weights file name: the three lab arms' fixed names, ``student-<arm>`` for any other
    arm (one per method in a comparison's seed folder)."""

    def __missing__(self, arm: str) -> str:
        return "student-" + re.sub(r"[^A-Za-z0-9_.-]+", "_", arm) + ".safetensors"


WEIGHT_FILES = _WeightFiles(
    teacher="teacher.safetensors", scratch="student-scratch.safetensors", distilled="student-distilled.safetensors"
)
PROJECTORS_FILE = "student-distilled.projectors.safetensors"

ProgressFactory = Callable[[str], Progress | None]


def run_lab(
    cfg: ExperimentConfig,
    *,
    out: Path | None = None,
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] | None = None,
    resume: Path | None = None,
    stop: Callable[[], bool] | None = None,
    run_dir: Path | None = None,
    arms: Mapping[str, DistillConfig] | None = None,
) -> Path:
    """Run the three-arm lab described by ``cfg``; returns the run folder.

    Args:
        cfg: a validated experiment config (:func:`kdlab.load_experiment`).
        out: parent folder of the run folder (default ``cfg.out``).
        progress: ``arm -> Progress`` for per-epoch progress display (the CLI's rich bars).
        log: receives one-line status messages.
        resume: an existing run folder to continue (:func:`kdlab.lab.resume.resume_lab` reads its
            config): finished arms are skipped, the unfinished one continues from its last
            complete epoch.
        stop: asked at every step boundary; True stops training with
            :class:`~kdlab.errors.RunInterrupted` (results.json then says "interrupted").
        run_dir: write into this new folder instead of a new one under ``out``.
        arms: distilled arms to train, arm name -> distill settings, instead of the one
            ``distilled`` arm of ``cfg.distill`` (a comparison's seed folder: one per method).

    Raises:
        RunInterrupted: ``stop`` answered True (or KeyboardInterrupt arrived); resume later.
        TrainingError: a non-finite loss stopped an arm (results.json says "failed").
    """
    rt = Runtime.start(cfg)  # device, torchrun process group, precision (docs/performance.md)
    try:
        return _run_lab(
            cfg, rt, out=out, progress=progress, log=log, resume=resume, stop=stop, run_dir=run_dir, arms=arms
        )
    finally:
        rt.finish()


def _run_lab(
    cfg: ExperimentConfig,
    rt: Runtime,
    *,
    out: Path | None,
    progress: ProgressFactory | None,
    log: Callable[[str], None] | None,
    resume: Path | None,
    stop: Callable[[], bool] | None,
    run_dir: Path | None,
    arms: Mapping[str, DistillConfig] | None,
) -> Path:
    if not rt.dist.is_main:  # under torchrun only rank 0 prints and writes the run folder
        log = progress = None
        run_dir = None
    device = rt.device
    data = check_inputs(cfg, arms)
    if resume is None:
        run_dir = (
            Path(run_dir)
            if run_dir is not None
            else create_run_dir(rt.out_dir(out if out is not None else cfg.out), cfg.name)
        )
        try:
            write_config(run_dir, cfg.model_dump(mode="json"))
        except OSError:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # still empty: a full disk at the first write leaves no folder behind
            raise
    else:
        run_dir = Path(resume)
    with RunLock(run_dir), deterministic_mode(cfg.deterministic):
        if resume is None or not (run_dir / "env.json").is_file():  # (a full disk stopped its first write)
            atomic_write_json(run_dir / "env.json", {**env_info(device, cfg.seed), **repro_info(cfg.deterministic)})
        if resume is not None:
            note_resume(run_dir, sys.argv)
        try:
            _run_arms(cfg, data, run_dir, rt, progress, log, resume is not None, stop, arms)
        except (RunInterrupted, KeyboardInterrupt) as e:
            mark_status(run_dir, "interrupted", resume=resume_command(run_dir), signal=getattr(stop, "signum", None))
            if isinstance(e, RunInterrupted):
                e.run_dir = run_dir
            raise
        except Exception as e:  # a non-finite loss, a full disk, a bug: the folder says what happened
            error = _storage_error(e, run_dir, resumable=arms is None) if isinstance(e, OSError) else e
            with contextlib.suppress(Exception):  # never hide the original error behind this one
                mark_status(run_dir, "failed", error=str(error) or type(error).__name__)
            if error is e:
                raise
            raise error from None
    return run_dir


def _storage_error(e: OSError, run_dir: Path, *, resumable: bool) -> Exception:
    """A failed write during the run as one line that says how to go on: free the space, then resume
    (every finished arm and the last complete epoch are kept). Other OS errors are left as they are."""
    import errno

    from kdlab.errors import StorageError

    if not isinstance(e, StorageError):
        if e.errno not in {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG}:
            return e
        where = e.filename if e.filename is not None else run_dir
        e = StorageError(f"{where}: cannot write ({e.strerror or e}); free disk space or choose a writable folder")
    return StorageError(f"{e}; then resume with: {resume_command(run_dir)}") if resumable else e


def check_inputs(cfg: ExperimentConfig, arms: Mapping[str, DistillConfig] | None = None) -> DataBundle:
    """Load the data and check model names, teacher checkpoint and the distill settings of every
    distilled arm (default: ``cfg.distill``) against it; returns the data.

    Everything a user can get wrong is checked before a run folder exists, so a bad input leaves
    nothing behind.
    """
    data = build_data(cfg.data, cfg.seed)
    for model_name in (cfg.teacher.model, cfg.student.model):
        create_model(
            model_name,
            num_classes=data.num_classes,
            input_shape=data.input_shape,
            vocab_size=data.meta.get("vocab_size"),
        )
    if cfg.teacher.checkpoint is not None:
        probe = create_model(
            cfg.teacher.model,
            num_classes=data.num_classes,
            input_shape=data.input_shape,
            vocab_size=data.meta.get("vocab_size"),
        )
        load_weights(probe, cfg.teacher.checkpoint, what=f"teacher '{cfg.teacher.model}'", convert_floats=True)
    for distill in (arms or {"distilled": cfg.distill}).values():
        # A cache that cannot be used is refused before any training, not after the teacher.
        teacher_cache.decide(distill.teacher_cache, objective=None, augment_random=cfg.train.augment.random)
        _check_distill(cfg.model_copy(update={"distill": distill}), data)
    return data


def _run_arms(
    cfg: ExperimentConfig,
    data: DataBundle,
    run_dir: Path,
    rt: Runtime,
    progress: ProgressFactory | None,
    log: Callable[[str], None] | None,
    resuming: bool,
    stop: Callable[[], bool] | None,
    distilled: Mapping[str, DistillConfig] | None = None,
) -> None:
    say = log or (lambda _msg: None)
    students = {"distilled": cfg.distill} if distilled is None else dict(distilled)
    device = rt.device
    say(f"data {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
    if "vocab" in data.meta:  # text runs: the vocabulary travels with the weights (kdlab predict)
        save_vocab(run_dir, data.meta["vocab"])
    fresh: dict[str, Any] = {
        "schema_version": 1,
        "kdlab_version": __version__,
        "run_id": run_dir.name,
        "name": cfg.name,
        "status": "running",
        "seed": cfg.seed,
        "device": str(device),
        "data": data.summary(),
        "distill": cfg.distill.model_dump(mode="json"),
        "performance": rt.record(),
        "arms": {},
    }
    results = continue_results(run_dir, fresh, WEIGHT_FILES) if resuming else fresh
    if distilled is not None:
        results["methods"] = {arm: dc.model_dump(mode="json") for arm, dc in students.items()}
    done = set(results["arms"])
    write_results(run_dir, results)
    history_rows: list[dict[str, Any]] = read_history_rows(run_dir, done) if resuming else []
    splits = rt.place({k: getattr(data, k) for k in ("train", "val", "test")})
    test_loader = TensorLoader(splits["test"].x, splits["test"].y, batch_size=cfg.train.eval_batch_size)
    val = splits["val"] if len(splits["val"]) else None
    arm_cache: dict[str, str] = {}

    def make(model_name: str, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        vocab = data.meta.get("vocab_size")
        return create_model(model_name, num_classes=data.num_classes, input_shape=data.input_shape, vocab_size=vocab)

    def record(
        arm: str,
        model: nn.Module,
        history: History | None,
        extra: dict[str, Any],
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        size = save_weights(model, run_dir / WEIGHT_FILES[arm], {"arm": arm, "kdlab": __version__})
        logits, y = predict(model, test_loader)
        extra.update(metrics.prediction_metrics(logits, y, num_classes=data.num_classes, teacher_logits=teacher_logits))
        extra.update(metrics.inference_latency(model, prepare_inputs(splits["test"].x[:32])))
        steps = sum(r["steps"] for r in history) if history else 0
        seconds = sum(r["seconds"] for r in history) if history else 0.0
        results["arms"][arm] = {
            "model": extra.pop("model"),
            "test_accuracy": float((logits.argmax(-1) == y).float().mean()),
            "test_loss": float(losses.cross_entropy(logits, y)),
            "params": count_params(model),
            "size_bytes": size,
            "train_seconds": seconds,
            "ms_per_step": 1000.0 * seconds / steps if steps else None,
            "epochs": len(history) if history else 0,
            "selected_epoch": history.selected_epoch if history else None,
            "weights": WEIGHT_FILES[arm],
            **extra,
        }
        for row in history or []:
            history_rows.append({"arm": arm, **row})
        write_history(run_dir, history_rows)
        write_results(run_dir, results)
        ArmCheckpoint(run_dir / "checkpoints" / arm, arm).remove()  # the arm is on record now
        acc = results["arms"][arm]["test_accuracy"]
        say(f"{arm}: test accuracy {100 * acc:.2f}%")
        return logits

    def train(
        arm: str,
        model: nn.Module,
        seed: int,
        epochs: int,
        distiller: Distiller | None = None,
        settings: DistillConfig | None = None,
    ) -> History:
        prog = progress(arm) if progress else None
        optimizer = make_optimizer(
            [p for p in model.parameters() if p.requires_grad],
            name=cfg.train.optimizer,
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
            fused=rt.accel.fused_optimizer,
        )
        ckpt = ArmCheckpoint(run_dir / "checkpoints" / arm, arm)
        state = ckpt.load(model, optimizer) if resuming and ckpt.exists() else FitState()
        if state.epoch:
            say(f"{arm}: resuming after epoch {state.epoch} of {epochs}")
        kwargs: dict[str, Any] = dict(
            epochs=epochs,
            optimizer=optimizer,
            state=state,
            on_epoch_end=lambda _epoch, _row: ckpt.save(model, optimizer, state),
            nonfinite=cfg.train.nonfinite,
            grad_clip=cfg.train.grad_clip,
            should_stop=stop,
            batch_size=cfg.train.batch_size,
            seed=seed,
            device=device,
            select=cfg.train.select,
            eval_batch_size=cfg.train.eval_batch_size,
            progress=prog,
            **rt.fit_options(),
        )
        loader = rt.train_loader(splits["train"], seed)
        try:
            if distiller is not None:
                teacher_fn = rt.teacher_fn(
                    settings or cfg.distill,
                    distiller.objective,
                    distiller.teacher,
                    splits["train"],
                    distiller.teacher_logits,
                    say,
                )
                results["teacher_cache"] = rt.cache
                arm_cache[arm] = "live" if rt.cache["status"] == "off" else "cached"
                return distiller.fit(loader, val, teacher_fn=teacher_fn, **kwargs)
            return fit(model, loader, val, **kwargs)
        except TrainingError as e:
            kept = f"checkpoint of epoch {state.epoch} kept" if state.epoch else "no checkpoint yet"
            raise TrainingError(f"{arm} arm: {e}; {kept}") from None

    # 1. teacher -------------------------------------------------------------------------------
    teacher = rt.prepare(make(cfg.teacher.model, cfg.seed))
    if "teacher" in done:  # resuming: the finished teacher's weights are in the run folder
        load_weights(teacher, run_dir / WEIGHT_FILES["teacher"], what=f"teacher '{cfg.teacher.model}'")
        teacher.eval()
        t_logits = predict(teacher, test_loader)[0]
    elif cfg.teacher.checkpoint is not None:
        load_weights(teacher, cfg.teacher.checkpoint, what=f"teacher '{cfg.teacher.model}'", convert_floats=True)
        say(f"teacher: loaded {cfg.teacher.checkpoint}")
        t_history = None
        source = str(cfg.teacher.checkpoint)
    else:
        t_history = train("teacher", teacher, cfg.seed, cfg.teacher.epochs)
        source = "trained"
    if "teacher" not in done:
        teacher.eval()
        t_logits = record("teacher", teacher, t_history, {"model": cfg.teacher.model, "source": source})

    # 2. scratch and 3. distilled: the same initial weights and data order, so the difference
    # between the two is the teacher's doing and nothing else.
    student_seed = cfg.seed + 1
    initial = rt.prepare(make(cfg.student.model, student_seed))
    for arm, dc in (("scratch", None), *students.items()):
        if arm in done:
            continue
        student = copy.deepcopy(initial)
        distiller = None
        if dc is not None:
            # The dry batch builds a feature method's projectors, so that the optimizer and the
            # arm's checkpoints (resume) hold them together with the student.
            distiller = make_distiller(cfg, teacher, student, prepare_inputs(splits["train"].x[:2]), distill=dc)
        trained = distiller.trainable_module() if distiller is not None else student
        history = train(arm, trained, student_seed, cfg.student.epochs, distiller, dc)
        extra: dict[str, Any] = {"model": cfg.student.model}
        if arm in arm_cache:  # where this arm's teacher logits came from: "cached" or "live"
            extra["teacher_outputs"] = arm_cache[arm]
        projectors = (
            PROJECTORS_FILE
            if arm == "distilled"
            else WEIGHT_FILES[arm].replace(".safetensors", ".projectors.safetensors")
        )
        if distiller is not None and distiller.save_projectors(run_dir / projectors) is not None:
            extra["projectors"] = projectors  # feature-method projectors, saved beside the student
        record(arm, student, history, extra, teacher_logits=t_logits)
    with contextlib.suppress(OSError):  # the cache's copy in the run folder is a convenience
        rt.link_cache(run_dir)
    if rt.cache or "teacher_cache" not in results:  # a resumed run whose arms were all done keeps its record
        results["teacher_cache"] = rt.cache

    arms = results["arms"]
    if distilled is None:
        results["comparison"] = {
            "distilled_minus_scratch_points": 100
            * (arms["distilled"]["test_accuracy"] - arms["scratch"]["test_accuracy"]),
            "teacher_minus_distilled_points": 100
            * (arms["teacher"]["test_accuracy"] - arms["distilled"]["test_accuracy"]),
            "note": "one seed: a gap of 1-3 points is within seed-to-seed noise; use several seeds to conclude",
        }
    # "complete" is written last, once every file the run promises is on disk (a full disk before
    # this point leaves a "running" or "failed" run that --resume finishes).
    from kdlab.report.figures import plot_accuracy

    plot_accuracy(run_dir, history_rows)
    results["status"] = "complete"
    write_results(run_dir, results)
    from kdlab.lab.recovery import clear_failed_marker

    clear_failed_marker(run_dir)


def make_distiller(
    cfg: ExperimentConfig,
    teacher: nn.Module,
    student: nn.Module,
    example_input: torch.Tensor | None = None,
    *,
    distill: DistillConfig | None = None,
) -> Distiller:
    """The distilled arm's :class:`Distiller`, with every option of ``distill`` (default ``cfg.distill``)."""
    dc = distill if distill is not None else cfg.distill
    return Distiller(
        teacher=teacher,
        student=student,
        alpha=dc.alpha,
        temperature=dc.temperature,
        t_squared=dc.t_squared,
        method=dc.method,
        example_input=example_input,
        **dc.method_options(),
    )


def _check_distill(cfg: ExperimentConfig, data: DataBundle) -> None:
    """Fail fast on ``distill.*`` mistakes (method, options, layer names, feature shapes): build the
    distiller on untrained models and run one dry batch, before anything is trained or written."""
    shape: dict[str, Any] = dict(
        num_classes=data.num_classes, input_shape=data.input_shape, vocab_size=data.meta.get("vocab_size")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained models: the size warning would be noise here
        make_distiller(
            cfg,
            create_model(cfg.teacher.model, **shape),
            create_model(cfg.student.model, **shape),
            prepare_inputs(data.train.x[:2]),
        )
