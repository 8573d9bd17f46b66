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
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config.schema import DistillConfig, ExperimentConfig
from kdlab.data.bundle import DataBundle, build_data, check_keys
from kdlab.data.tensors import Loader, Split, TensorLoader, as_loader, prepare_inputs
from kdlab.data.text import save_vocab
from kdlab.errors import ConfigError, RunInterrupted, TrainingError
from kdlab.io import load_weights, save_weights
from kdlab.kd import losses
from kdlab.lab.recovery import (
    RunLock,
    clear_failed_marker,
    continue_results,
    mark_status,
    note_resume,
    read_history_rows,
    resume_command,
)
from kdlab.lab.runtime import Runtime
from kdlab.models.registry import count_params, create_model
from kdlab.runs import (  # noqa: F401 - the run folder's names, kept importable from here
    ARMS,
    CHECKPOINTS_DIR,
    PROJECTORS_FILE,
    TENSORBOARD_DIR,
    WEIGHT_FILES,
    _WeightFiles,
    create_run_dir,
    has_env,
    write_config,
    write_env,
    write_history,
    write_results,
)
from kdlab.train import metrics, teacher_cache
from kdlab.train.checkpoint import ArmCheckpoint, FitState
from kdlab.train.distiller import Distiller
from kdlab.train.loop import History, Progress, StepOptions, make_optimizer, predict, run_epochs
from kdlab.train.reproduce import deterministic_mode
from kdlab.version import __version__

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
    data = check_inputs(cfg, arms, new_run=resume is None)
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
        if resume is None or not has_env(run_dir):  # (a full disk stopped its first write)
            write_env(run_dir, device, cfg.seed, cfg.deterministic)
        if resume is not None:
            note_resume(run_dir, sys.argv)
        try:
            session = LabSession.open(
                cfg, data, run_dir, rt, progress=progress, log=log, resuming=resume is not None, stop=stop
            )
            session.run(arms)
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


def check_inputs(
    cfg: ExperimentConfig, arms: Mapping[str, DistillConfig] | None = None, *, new_run: bool = True
) -> DataBundle:
    """Load the data and check model names, teacher checkpoint and the distill settings of every
    distilled arm (default: ``cfg.distill``) against it; returns the data. A new run also refuses
    ``data.*`` keys its dataset would ignore (a resumed run keeps the config it started with).

    Everything a user can get wrong is checked before a run folder exists, so a bad input leaves
    nothing behind.
    """
    if new_run:
        check_keys(cfg.data)
    if "tensorboard" in cfg.train.log:  # a missing package is refused before a run folder exists
        _summary_writer_class()
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


@dataclass
class LabSession:
    """One lab run in progress: what every arm needs, built once (:meth:`open`), and the steps of
    the run — :meth:`teacher_arm`, :meth:`student_arms`, :meth:`finish` — each on its own.

    ``results`` is the run's results.json being filled in; ``history_rows`` its history.csv.
    """

    cfg: ExperimentConfig
    data: DataBundle
    run_dir: Path
    rt: Runtime
    progress: ProgressFactory | None
    say: Callable[[str], None]
    resuming: bool
    stop: Callable[[], bool] | None
    results: dict[str, Any]
    history_rows: list[dict[str, Any]]
    splits: dict[str, Split]
    test_loader: TensorLoader
    val_loader: Loader | None
    teacher_outputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        cfg: ExperimentConfig,
        data: DataBundle,
        run_dir: Path,
        rt: Runtime,
        *,
        progress: ProgressFactory | None,
        log: Callable[[str], None] | None,
        resuming: bool,
        stop: Callable[[], bool] | None,
    ) -> LabSession:
        """The session of ``run_dir``: its results so far (when resuming), the data on the device,
        the evaluation loaders; a text run's vocabulary is saved beside the weights (kdlab predict)."""
        say = log or (lambda _msg: None)
        say(f"data {data.name}: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test")
        if "vocab" in data.meta:
            save_vocab(run_dir, data.meta["vocab"])
        fresh: dict[str, Any] = {
            "schema_version": 1,
            "kdlab_version": __version__,
            "run_id": run_dir.name,
            "name": cfg.name,
            "status": "running",
            "seed": cfg.seed,
            "device": str(rt.device),
            "data": data.summary(),
            "distill": cfg.distill.model_dump(mode="json"),
            "performance": rt.record(),
            "arms": {},
        }
        results = continue_results(run_dir, fresh, WEIGHT_FILES) if resuming else fresh
        rows = read_history_rows(run_dir, set(results["arms"])) if resuming else []
        splits = rt.place({k: getattr(data, k) for k in ("train", "val", "test")})
        test_loader = TensorLoader(splits["test"].x, splits["test"].y, batch_size=cfg.train.eval_batch_size)
        # Built once for every arm: validation in eval_batch_size batches (an empty split: none).
        val, bs = splits["val"], cfg.train.eval_batch_size
        val_loader = as_loader(val, batch_size=bs, device=rt.device) if len(val) else None
        return cls(
            cfg, data, run_dir, rt, progress, say, resuming, stop, results, rows, splits, test_loader, val_loader
        )

    def run(self, distilled: Mapping[str, DistillConfig] | None = None) -> None:
        """Train and record every arm not yet on record: the teacher, then scratch and the distilled
        arm(s) — ``distilled`` (arm -> settings, a comparison's seed folder) or the one arm of
        ``cfg.distill``."""
        students = {"distilled": self.cfg.distill} if distilled is None else dict(distilled)
        if distilled is not None:
            self.results["methods"] = {arm: dc.model_dump(mode="json") for arm, dc in students.items()}
        self.write_results()
        teacher, t_logits = self.teacher_arm()
        self.student_arms(teacher, t_logits, students)
        self.finish(single=distilled is None)

    @property
    def done(self) -> set[str]:
        """The arms already on record (a resumed run skips them)."""
        return set(self.results["arms"])

    def write_results(self) -> None:
        write_results(self.run_dir, self.results)

    def make(self, model_name: str, seed: int) -> nn.Module:
        """A freshly initialised model on the run's device, its initial weights fixed by ``seed``."""
        torch.manual_seed(seed)
        vocab = self.data.meta.get("vocab_size")
        model = create_model(
            model_name, num_classes=self.data.num_classes, input_shape=self.data.input_shape, vocab_size=vocab
        )
        return self.rt.prepare(model)

    # ------------------------------------------------------------------ the arms
    def teacher_arm(self) -> tuple[nn.Module, torch.Tensor]:
        """The teacher — trained, loaded from ``teacher.checkpoint``, or (resuming) from the run
        folder — in eval mode, with its test logits."""
        cfg = self.cfg
        teacher = self.make(cfg.teacher.model, cfg.seed)
        what = f"teacher '{cfg.teacher.model}'"
        if "teacher" in self.done:  # resuming: the finished teacher's weights are in the run folder
            load_weights(teacher, self.run_dir / WEIGHT_FILES["teacher"], what=what)
            teacher.eval()
            return teacher, predict(teacher, self.test_loader)[0]
        if cfg.teacher.checkpoint is not None:
            load_weights(teacher, cfg.teacher.checkpoint, what=what, convert_floats=True)
            self.say(f"teacher: loaded {cfg.teacher.checkpoint}")
            history, source = None, str(cfg.teacher.checkpoint)
        else:
            history, source = self.train("teacher", teacher, cfg.seed, cfg.teacher.epochs), "trained"
        teacher.eval()
        return teacher, self.record("teacher", teacher, history, {"model": cfg.teacher.model, "source": source})

    def student_arms(
        self, teacher: nn.Module, teacher_logits: torch.Tensor, students: Mapping[str, DistillConfig]
    ) -> None:
        """Scratch, then each distilled arm: the same initial weights and data order, so the
        difference between them is the teacher's doing and nothing else."""
        cfg = self.cfg
        student_seed = cfg.seed + 1
        initial = self.make(cfg.student.model, student_seed)
        arms: list[tuple[str, DistillConfig | None]] = [("scratch", None), *students.items()]
        for arm, dc in arms:
            if arm in self.done:
                continue
            student = copy.deepcopy(initial)
            distiller = None
            if dc is not None:
                # The dry batch builds a feature method's projectors, so that the optimizer and the
                # arm's checkpoints (resume) hold them together with the student.
                example = prepare_inputs(self.splits["train"].x[:2])
                distiller = make_distiller(cfg, teacher, student, example, distill=dc)
            trained = distiller.trainable_module() if distiller is not None else student
            history = self.train(arm, trained, student_seed, cfg.student.epochs, distiller, dc)
            extra: dict[str, Any] = {"model": cfg.student.model}
            if arm in self.teacher_outputs:  # where this arm's teacher logits came from: "cached" or "live"
                extra["teacher_outputs"] = self.teacher_outputs[arm]
            projectors = (
                PROJECTORS_FILE
                if arm == "distilled"
                else WEIGHT_FILES[arm].replace(".safetensors", ".projectors.safetensors")
            )
            if distiller is not None and distiller.save_projectors(self.run_dir / projectors) is not None:
                extra["projectors"] = projectors  # feature-method projectors, saved beside the student
            self.record(arm, student, history, extra, teacher_logits=teacher_logits)

    def finish(self, *, single: bool) -> None:
        """The run's closing records: the teacher-cache record, the one-seed comparison of a single
        run, the accuracy plot — and only then ``"status": "complete"`` (a full disk before this
        point leaves a "running" or "failed" run that --resume finishes)."""
        rt, results = self.rt, self.results
        with contextlib.suppress(OSError):  # the cache's copy in the run folder is a convenience
            rt.link_cache(self.run_dir)
        if rt.cache or "teacher_cache" not in results:  # a resumed run whose arms were all done keeps its record
            results["teacher_cache"] = rt.cache
        arms = results["arms"]
        if single:
            results["comparison"] = {
                "distilled_minus_scratch_points": 100
                * (arms["distilled"]["test_accuracy"] - arms["scratch"]["test_accuracy"]),
                "teacher_minus_distilled_points": 100
                * (arms["teacher"]["test_accuracy"] - arms["distilled"]["test_accuracy"]),
                "note": "one seed: a gap of 1-3 points is within seed-to-seed noise; use several seeds to conclude",
            }
        from kdlab.report.figures import plot_accuracy

        plot_accuracy(self.run_dir, self.history_rows, {a: r.get("selected_epoch") for a, r in arms.items()})
        results["status"] = "complete"
        self.write_results()
        clear_failed_marker(self.run_dir)

    # ------------------------------------------------------------------ one arm
    def train(
        self,
        arm: str,
        model: nn.Module,
        seed: int,
        epochs: int,
        distiller: Distiller | None = None,
        settings: DistillConfig | None = None,
    ) -> History:
        """Train one arm with the one loop (a distiller's arm through :meth:`Distiller.fit`), from
        its checkpoint when resuming; checkpoints after every epoch."""
        cfg, rt = self.cfg, self.rt
        optimizer = make_optimizer(
            [p for p in model.parameters() if p.requires_grad],
            name=cfg.train.optimizer,
            lr=cfg.train.lr,
            weight_decay=cfg.train.weight_decay,
            fused=rt.accel.fused_optimizer,
        )
        ckpt = ArmCheckpoint(self.run_dir / CHECKPOINTS_DIR / arm, arm)
        state = ckpt.load(model, optimizer) if self.resuming and ckpt.exists() else FitState()
        if state.epoch:
            self.say(f"{arm}: resuming after epoch {state.epoch} of {epochs}")
        writer = _tensorboard_writer(self.run_dir / TENSORBOARD_DIR / arm) if "tensorboard" in cfg.train.log else None

        def on_epoch_end(epoch: int, row: dict[str, Any]) -> None:
            ckpt.save(model, optimizer, state)
            if writer is not None:
                for key, value in row.items():
                    if key != "epoch" and isinstance(value, int | float):
                        writer.add_scalar(key, value, epoch)
                writer.flush()

        common: dict[str, Any] = dict(
            optimizer=optimizer,
            epochs=epochs,
            seed=seed,  # fixes dropout's draws; the data order is the loader's, seeded with the same
            select=cfg.train.select,
            state=state,
            steps=StepOptions(
                nonfinite=cfg.train.nonfinite,
                grad_clip=cfg.train.grad_clip,
                should_stop=self.stop,
                precision=rt.accel.precision,
            ),
            compile=rt.accel.compile,
            progress=self.progress(arm) if self.progress else None,
            on_epoch_end=on_epoch_end,
        )
        loader = rt.train_loader(self.splits["train"], seed)
        try:
            if distiller is None:
                return run_epochs(model, loader, self.val_loader, **common)
            teacher_fn = rt.teacher_fn(
                settings or cfg.distill,
                distiller.objective,
                distiller.teacher,
                self.splits["train"],
                distiller.teacher_logits,
                self.say,
            )
            self.results["teacher_cache"] = rt.cache
            self.teacher_outputs[arm] = "live" if rt.cache["status"] == "off" else "cached"
            return distiller.run_epochs(loader, self.val_loader, teacher_fn=teacher_fn, **common)
        except TrainingError as e:
            kept = f"checkpoint of epoch {state.epoch} kept" if state.epoch else "no checkpoint yet"
            raise TrainingError(f"{arm} arm: {e}; {kept}") from None
        finally:
            if writer is not None:
                writer.close()

    def record(
        self,
        arm: str,
        model: nn.Module,
        history: History | None,
        extra: dict[str, Any],
        teacher_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Save the arm's weights, score it once on the test split, put it on record (results.json,
        history.csv) and drop its training checkpoint; returns its test logits."""
        run_dir, test_x = self.run_dir, self.splits["test"].x
        size = save_weights(model, run_dir / WEIGHT_FILES[arm], {"arm": arm, "kdlab": __version__})
        logits, y = predict(model, self.test_loader)
        extra.update(
            metrics.prediction_metrics(logits, y, num_classes=self.data.num_classes, teacher_logits=teacher_logits)
        )
        extra.update(metrics.inference_latency(model, prepare_inputs(test_x[:32])))
        steps = sum(r["steps"] for r in history) if history else 0
        seconds = sum(r["seconds"] for r in history) if history else 0.0
        self.results["arms"][arm] = {
            "model": extra.pop("model"),
            "test_accuracy": metrics.accuracy(logits, y),
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
        self.history_rows.extend({"arm": arm, **row} for row in history or [])
        write_history(run_dir, self.history_rows)
        self.write_results()
        ArmCheckpoint(run_dir / CHECKPOINTS_DIR / arm, arm).remove()  # the arm is on record now
        self.say(f"{arm}: test accuracy {100 * self.results['arms'][arm]['test_accuracy']:.2f}%")
        return logits


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


def _summary_writer_class() -> Any:
    """TensorBoard's ``SummaryWriter`` (``train.log: [tensorboard]``); a missing package is one line."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "train.log: tensorboard logging needs the tensorboard package: pip install kdlab[tensorboard]"
        ) from None
    return SummaryWriter


def _tensorboard_writer(log_dir: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` writing event files in ``log_dir``."""
    return _summary_writer_class()(log_dir=str(log_dir))
