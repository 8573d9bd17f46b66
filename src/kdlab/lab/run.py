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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.config.schema import DistillConfig, ExperimentConfig
from kdlab.data import transfer, views
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
from kdlab.lab.runtime import Runtime, TeacherInputs
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
            write_config(run_dir, resolved_config(cfg, data))  # with each model's resolved input
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
    _record_specs(cfg, new_run=new_run)
    data = build_data(cfg.data, cfg.seed)
    inputs = resolve_inputs(cfg, data)  # each model's view of the samples (data.meta["inputs"])
    sized = {who: views.shaped(own_view(inputs, who, data), data) for who in ("teacher", "student")}
    built: dict[str, nn.Module] = {}
    for who, model_name in (("teacher", cfg.teacher.model), ("student", cfg.student.model)):
        model = built[who] = create_model(
            model_name,
            num_classes=data.num_classes,
            input_shape=sized[who].input_shape,
            vocab_size=sized[who].meta.get("vocab_size"),
            **model_options(cfg, who, data),
        )
        checkpoint = cfg.teacher.checkpoint if who == "teacher" else cfg.student.checkpoint
        if checkpoint is not None and not Path(checkpoint).is_dir():  # (an hf: model's folder is its own)
            load_weights(model, checkpoint, what=f"{who} '{model_name}'", convert_floats=True)
    if cfg.student.init_from_teacher:  # an unsupported pair or a different hidden size fails here
        from kdlab.models.from_hf import init_from_teacher

        init_from_teacher(built["student"], built["teacher"])
    for distill in (arms or {"distilled": cfg.distill}).values():
        # A cache that cannot be used is refused before any training, not after the teacher.
        teacher_cache.decide(distill.teacher_cache, objective=None, augment_random=cfg.train.augment.random)
        _check_distill(cfg.model_copy(update={"distill": distill}), data, built["teacher"], built["student"])
    return data


def resolve_inputs(cfg: ExperimentConfig, data: DataBundle) -> dict[str, views.View | None]:
    """Each model's full view of the samples (``teacher``, ``student``: config, else what the model
    declares, else the data; :mod:`kdlab.data.views`), kept in ``data.meta["inputs"]``. A tokenizer
    is loaded here, so a bad folder fails before a run folder exists."""
    from kdlab.models.specs import declared_inputs

    out: dict[str, views.View | None] = {}
    for who, mc in (("teacher", cfg.teacher), ("student", cfg.student)):
        declared = declared_inputs(
            mc.model, pretrained=mc.pretrained, has_checkpoint=mc.checkpoint is not None, key=f"{who}.model"
        )
        view = views.resolve(mc.input, declared, data, key=who)
        if view is not None and view.tokenizer is not None:
            field_key = f"{who}.input.tokenizer" if view.origin.get("tokenizer") == "config" else f"{who}.model"
            views.load_tokenizer(view.tokenizer, field_key)
        out[who] = view
    data.meta["inputs"] = out
    return out


def placed_splits(cfg: ExperimentConfig, rt: Runtime, data: DataBundle) -> dict[str, Split]:
    """The splits one model's view trains and is scored on, placed by ``rt``: ``train`` (the labelled
    budget), ``val``, ``test``, and when configured ``transfer`` (the budget followed by the transfer
    set, for distilled arms) and ``teacher_train`` (every labelled sample, ``teacher.train_on: all``)."""
    parts = {k: getattr(data, k) for k in ("train", "val", "test")}
    if data.unlabeled is not None:
        parts["transfer"] = transfer.with_transfer(data.train, data.unlabeled)
    if cfg.teacher.train_on == "all" and data.full_train is not None:
        parts["teacher_train"] = data.full_train
    return rt.place(parts)


def own_view(inputs: Mapping[str, views.View | None], who: str, data: DataBundle) -> views.View | None:
    """``who``'s view when it differs from the data's own, else None (it sees the data tensors)."""
    view = inputs.get(who)
    return None if view is None or views.is_data_view(view, data) else view


def resolved_config(cfg: ExperimentConfig, data: DataBundle) -> dict[str, Any]:
    """``cfg`` as config.resolved.yaml records it: ``teacher.input`` / ``student.input`` hold every
    field of the view each model used (:func:`resolve_inputs`)."""
    out = cfg.model_dump(mode="json")
    for who, view in (data.meta.get("inputs") or {}).items():
        if view is not None:
            out[who]["input"].update(view.values())
    return out


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
    own_views: dict[str, views.View | None] = field(default_factory=dict)
    """``teacher`` / ``student`` -> its own view of the samples, None when it sees the data's."""
    seen: dict[str, tuple[DataBundle, dict[str, Split], TensorLoader, Loader | None]] = field(default_factory=dict)
    """The views built so far (lazily, for a model whose view differs): data, placed splits, loaders."""

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
        if data.unlabeled is not None:
            say(f"transfer set ({data.meta.get('unlabeled_source')}): {len(data.unlabeled)} unlabelled, KD term only")
        if cfg.teacher.train_on == "all" and data.full_train is not None:
            say(f"teacher: trains on all {len(data.full_train)} labelled training samples (teacher.train_on: all)")
        if "vocab" in data.meta:
            save_vocab(run_dir, data.meta["vocab"])
        splits = placed_splits(cfg, rt, data)  # first: the performance record says where the data went
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
        inputs = data.meta.get("inputs")
        if inputs is None:
            inputs = resolve_inputs(cfg, data)
        if any(v is not None for v in inputs.values()):
            fresh["inputs"] = {who: v.record() for who, v in inputs.items() if v is not None}
        results = continue_results(run_dir, fresh, WEIGHT_FILES) if resuming else fresh
        rows = read_history_rows(run_dir, set(results["arms"])) if resuming else []
        test_loader = TensorLoader(splits["test"].x, splits["test"].y, batch_size=cfg.train.eval_batch_size)
        # Built once for every arm: validation in eval_batch_size batches (an empty split: none).
        val, bs = splits["val"], cfg.train.eval_batch_size
        val_loader = as_loader(val, batch_size=bs, device=rt.device) if len(val) else None
        session = cls(
            cfg, data, run_dir, rt, progress, say, resuming, stop, results, rows, splits, test_loader, val_loader
        )
        session.own_views = {who: own_view(inputs, who, data) for who in ("teacher", "student")}
        if "inputs" in fresh and "inputs" not in results:  # a resumed run keeps the origins it recorded first
            results["inputs"] = fresh["inputs"]
        return session

    @contextlib.contextmanager
    def seeing(self, who: str) -> Iterator[None]:
        """Within: ``data``, ``splits`` and the evaluation loaders are ``who``'s own view of the same
        samples (same rows, labels and order; built once, on first use), so that model trains,
        validates and is tested on its own inputs. Nothing changes for a model that sees the data's."""
        view = self.own_views.get(who)
        if view is None:
            yield
            return
        if who not in self.seen:
            self.say(f"{who}: its own inputs {view.values()}")
            data = views.view_bundle(view, self.data, max_memory_gb=self.cfg.data.max_memory_gb)
            splits = placed_splits(self.cfg, self.rt, data)
            bs = self.cfg.train.eval_batch_size
            test_loader = TensorLoader(splits["test"].x, splits["test"].y, batch_size=bs)
            val_loader = as_loader(splits["val"], batch_size=bs, device=self.rt.device) if len(splits["val"]) else None
            self.seen[who] = (data, splits, test_loader, val_loader)
        saved = (self.data, self.splits, self.test_loader, self.val_loader)
        self.data, self.splits, self.test_loader, self.val_loader = self.seen[who]
        try:
            yield
        finally:
            self.data, self.splits, self.test_loader, self.val_loader = saved

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

    def make(self, model_name: str, seed: int, *, who: str = "student") -> nn.Module:
        """A freshly initialised model on the run's device, its initial weights fixed by ``seed``.

        ``who`` (``teacher`` / ``student``) picks the model's own view of the inputs and its settings:
        ``<who>.pretrained`` weights (not for a teacher already on record), ``student.config``, and
        ``student.checkpoint``, loaded here so that every student arm starts from it."""
        cfg = self.cfg
        torch.manual_seed(seed)
        sized = views.shaped(own_view(self.data.meta.get("inputs") or {}, who, self.data), self.data)
        weights = not (who == "teacher" and "teacher" in self.done)
        model = create_model(
            model_name,
            num_classes=self.data.num_classes,
            input_shape=sized.input_shape,
            vocab_size=sized.meta.get("vocab_size"),
            **model_options(cfg, who, self.data, weights=weights),
        )
        checkpoint = cfg.student.checkpoint
        if who == "student" and checkpoint is not None and not Path(checkpoint).is_dir():
            load_weights(model, checkpoint, what=f"student '{model_name}'", convert_floats=True)
            self.say(f"students: start from {checkpoint}")
        return self.rt.prepare(model)

    # ------------------------------------------------------------------ the arms
    def teacher_arm(self) -> tuple[nn.Module, torch.Tensor]:
        """The teacher — trained, loaded from ``teacher.checkpoint``, or (resuming) from the run
        folder — in eval mode, with its test logits; on its own inputs (:meth:`seeing`)."""
        with self.seeing("teacher"):
            return self._teacher_arm()

    def _teacher_arm(self) -> tuple[nn.Module, torch.Tensor]:
        cfg = self.cfg
        if "teacher" in self.done:  # resuming: the finished teacher's weights are in the run folder
            teacher = self.make(cfg.teacher.model, cfg.seed, who="teacher")
            load_weights(teacher, self.run_dir / WEIGHT_FILES["teacher"], what=f"teacher '{cfg.teacher.model}'")
            teacher.eval()
            return teacher, predict(teacher, self.test_loader)[0]
        teacher, history, source = self._fit_teacher()
        extra = {"model": cfg.teacher.model, "source": source, "train_samples": len(self.teacher_split())}
        return teacher, self.record("teacher", teacher, history, extra)

    def fit_teacher(self) -> nn.Module:
        """The teacher trained on its training split (:meth:`teacher_split`), or loaded from
        ``teacher.checkpoint``, or used as given — in eval mode, on its own inputs, neither recorded
        nor scored on the test split (what a search such as ``kdlab tune`` uses)."""
        with self.seeing("teacher"):
            return self._fit_teacher()[0]

    def _fit_teacher(self) -> tuple[nn.Module, History | None, str]:
        cfg = self.cfg
        teacher = self.make(cfg.teacher.model, cfg.seed, who="teacher")
        what = f"teacher '{cfg.teacher.model}'"
        if cfg.teacher.checkpoint is not None:
            if not Path(cfg.teacher.checkpoint).is_dir():  # (an hf: model's folder: its weights are loaded)
                load_weights(teacher, cfg.teacher.checkpoint, what=what, convert_floats=True)
            self.say(f"teacher: loaded {cfg.teacher.checkpoint}")
            history, source = None, str(cfg.teacher.checkpoint)
        elif cfg.teacher.epochs == 0:  # weights of its own (teacher.pretrained, an hf: folder), used as they are
            self.say(f"teacher: {cfg.teacher.model} used as given (teacher.epochs is 0)")
            history, source = None, "pretrained" if cfg.teacher.pretrained else cfg.teacher.model
        else:  # trained here; from the model's own weights when it has them (fine-tuning)
            history, source = self.train("teacher", teacher, cfg.seed, cfg.teacher.epochs), "trained"
        teacher.eval()
        return teacher, history, source

    def teacher_split(self) -> Split:
        """The labelled samples the teacher trains on: every training sample (``teacher.train_on:
        all``, before ``data.train_limit``) or the students' budget."""
        return self.splits.get("teacher_train", self.splits["train"])

    def student_split(self, settings: DistillConfig | None) -> Split:
        """What a student arm trains on: the labelled budget (scratch, or ``distill.use_unlabeled:
        false``), else the budget followed by the transfer set (``data.unlabeled``)."""
        if settings is not None and settings.use_unlabeled and "transfer" in self.splits:
            return self.splits["transfer"]
        return self.splits["train"]

    def teacher_inputs(self, settings: DistillConfig | None) -> TeacherInputs:
        """What the teacher-cache pass of a distilled arm runs on: the teacher's view of the arm's
        training split (:meth:`student_split`, rows in the student's order)."""
        teacher_view = self.own_views.get("teacher")
        with self.seeing("teacher"):
            train = self.student_split(settings)
        differ = teacher_view != self.own_views.get("student")
        return TeacherInputs(train, teacher_view.record() if teacher_view else None, not differ)

    def student_arms(
        self, teacher: nn.Module, teacher_logits: torch.Tensor, students: Mapping[str, DistillConfig]
    ) -> None:
        """Scratch, then each distilled arm: the same initial weights and data order, so the
        difference between them is the teacher's doing and nothing else. The students see their own
        inputs (:meth:`seeing`); the teacher's logits come from the cache built on the teacher's."""
        with self.seeing("student"):
            initial = self.initial_student(teacher)
            for arm, dc in [("scratch", None), *students.items()]:
                if arm not in self.done:
                    student, history, distiller = self._fit_student(arm, initial, teacher, dc)
                    self._record_student(arm, student, history, distiller, dc, teacher_logits)

    def initial_student(self, teacher: nn.Module) -> nn.Module:
        """The weights every student arm starts from (seeded with ``seed + 1``; ``student.checkpoint``
        or, with ``student.init_from_teacher``, the teacher's embeddings and layers)."""
        initial = self.make(self.cfg.student.model, self.cfg.seed + 1, who="student")
        if self.cfg.student.init_from_teacher:  # DistilBERT-style: both student arms start from these weights
            from kdlab.models.from_hf import init_from_teacher

            record = self.results["init_from_teacher"] = init_from_teacher(initial, teacher)
            self.say(f"students: embeddings and layers from the teacher (student <- teacher layer: {record['layers']})")
        return initial

    def fit_student(
        self, arm: str, initial: nn.Module, teacher: nn.Module, distill: DistillConfig | None
    ) -> tuple[nn.Module, History]:
        """One student arm trained as the lab trains it — from a copy of ``initial``
        (:meth:`initial_student`), on its own inputs, on :meth:`student_split`, against the frozen
        ``teacher`` (its logits from the cache) when ``distill`` is given, validated every epoch
        (``progress(arm)`` sees each row), checkpointed in ``checkpoints/<arm>`` — but neither
        recorded nor scored on the test split (what a search such as ``kdlab tune`` uses). Returns the
        student (the weights ``train.select`` picks) and its history."""
        with self.seeing("student"):
            student, history, _ = self._fit_student(arm, initial, teacher, distill)
            return student, history

    def _fit_student(
        self, arm: str, initial: nn.Module, teacher: nn.Module, dc: DistillConfig | None
    ) -> tuple[nn.Module, History, Distiller | None]:
        cfg = self.cfg
        student = copy.deepcopy(initial)
        distiller = None
        if dc is not None:
            # The dry batch builds a feature method's projectors, so that the optimizer and the
            # arm's checkpoints (resume) hold them together with the student.
            inputs = self.teacher_inputs(dc)
            if not inputs.live_ok:  # each model's dry batch is its own view of the same two samples
                distiller = make_distiller(cfg, teacher, student, distill=dc)
                check_pair(distiller, prepare_inputs(inputs.train.x[:2]), prepare_inputs(self.splits["train"].x[:2]))
            else:
                example = prepare_inputs(self.splits["train"].x[:2])
                distiller = make_distiller(cfg, teacher, student, example, distill=dc)
        trained = distiller.trainable_module() if distiller is not None else student
        history = self.train(arm, trained, cfg.seed + 1, cfg.student.epochs, distiller, dc)
        return student, history, distiller

    def _record_student(
        self,
        arm: str,
        student: nn.Module,
        history: History,
        distiller: Distiller | None,
        dc: DistillConfig | None,
        teacher_logits: torch.Tensor,
    ) -> None:
        cfg = self.cfg
        extra: dict[str, Any] = {"model": cfg.student.model, "train_samples": len(self.student_split(dc))}
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
        if arm == "teacher":
            split = self.teacher_split()
        else:
            split = self.student_split(settings if distiller is not None else None)
        loader = rt.train_loader(split, seed)
        try:
            if distiller is None:
                return run_epochs(model, loader, self.val_loader, **common)
            dc = settings or cfg.distill
            # Transfer-set rows (label UNLABELED) enter the KD term only (kdlab.kd.objective).
            distiller.objective.partial_labels = split is not self.splits["train"]
            teacher_fn = rt.teacher_fn(
                dc, distiller.objective, distiller.teacher, self.teacher_inputs(dc), distiller.teacher_logits, self.say
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


def _record_specs(cfg: ExperimentConfig, *, new_run: bool) -> None:
    """Record each model spec as the run folder keeps it: a factory file's path made absolute, in
    ``cfg`` itself (so config.resolved.yaml and results.json name the file that ran). A resumed run's
    recorded factory file must already be absolute (never resolved against a folder)."""
    from kdlab.models.specs import absolute_spec, parse_spec

    for who, mc in (("teacher", cfg.teacher), ("student", cfg.student)):
        key = f"{who}.model"
        if not new_run and parse_spec(mc.model, key=key).kind == "factory":
            source = mc.model.rpartition(":")[0]
            if source.endswith(".py") and not Path(source).is_absolute():
                raise ConfigError(
                    f"{key}: '{mc.model}' is a relative path recorded in a run folder; it is never resolved"
                )
        recorded = absolute_spec(mc.model, key=key)
        if recorded != mc.model:
            mc.model = recorded


def model_options(cfg: ExperimentConfig, who: str, data: DataBundle, *, weights: bool = True) -> dict[str, Any]:
    """The keyword arguments of ``create_model`` for ``who`` (``teacher`` / ``student``) besides its
    size: the key named in errors, the data's class names, ``<who>.pretrained`` (with ``weights``; an
    architecture-only build never fetches weights) and ``student.config``."""
    mc = cfg.teacher if who == "teacher" else cfg.student
    options: dict[str, Any] = {"key": f"{who}.model", "classes": list(data.classes)}
    options["pretrained"] = mc.pretrained and weights
    if who == "student" and cfg.student.config:
        options["config"] = dict(cfg.student.config)
    return options


def _check_distill(cfg: ExperimentConfig, data: DataBundle, teacher: nn.Module, student: nn.Module) -> None:
    """Fail fast on ``distill.*`` mistakes (method, options, layer names, feature shapes): build the
    distiller on the models :func:`check_inputs` built (nothing trained yet; every distilled arm
    reuses them) and run one dry batch, before anything is trained or written.

    When the two models see the samples differently (``teacher.input`` / ``student.input``), the
    teacher's logits can only come from the cache built on its own view: whatever would run the
    teacher on the student's batches is refused, and each model's dry batch is its own view."""
    inputs = data.meta.get("inputs") or {}
    seen = {who: own_view(inputs, who, data) for who in ("teacher", "student")}
    differ = seen["teacher"] != seen["student"]
    if differ:
        _refuse_live_teacher(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained models: the size warning would be noise here
        if not differ:
            make_distiller(cfg, teacher, student, prepare_inputs(data.train.x[:2]))
            return
        distiller = make_distiller(cfg, teacher, student)
        if distiller.objective.needs_teacher_features:
            raise ConfigError(
                f"distill.method: '{cfg.distill.method}' needs the teacher's live features on the student's "
                "batches, but the teacher sees its own inputs (teacher.input / student.input differ); use a "
                "logit method (kd, dkd, dist) or give both models the same input"
            )
        check_pair(distiller, *(_dry_view(seen[who], data) for who in ("teacher", "student")))


def _refuse_live_teacher(cfg: ExperimentConfig) -> None:
    """The settings that would run the teacher on the student's batches, refused (one line naming the key)."""
    why = "the teacher sees its own inputs (teacher.input / student.input differ), built for the cache pass only"
    if cfg.distill.teacher_cache == "off":
        raise ConfigError(f"distill.teacher_cache=off: {why}; set distill.teacher_cache=auto or on")
    if cfg.train.augment.random:
        key = "train.augment.hflip" if cfg.train.augment.hflip else "train.augment.crop_padding"
        raise ConfigError(
            f"{key}: random augmentation needs the live teacher on every batch, but {why}; turn it off "
            "or give both models the same input"
        )


def _dry_view(view: views.View | None, data: DataBundle) -> torch.Tensor:
    """Two training inputs as ``view`` shows them (the data's own when None)."""
    if view is None:
        return prepare_inputs(data.train.x[:2])
    return views.build_view(view, data, "train", rows=torch.arange(min(2, len(data.train))))


def check_pair(distiller: Distiller, teacher_x: torch.Tensor, student_x: torch.Tensor) -> None:
    """The dry run of a teacher and a student that see different inputs: each on its own view of the
    same samples, both must return ``[batch, classes]`` logits of one shape."""
    student = distiller.student
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad():
            outs = []
            for who, model, x in (("teacher", distiller.teacher, teacher_x), ("student", student, student_x)):
                try:
                    outs.append(model(x.to(next(model.parameters()).device)))
                except Exception as e:
                    raise ConfigError(
                        f"{who}.input: dry run of the {who} on its inputs of shape {tuple(x.shape)} failed: "
                        f"{type(e).__name__}: {str(e)[:200]}"
                    ) from None
    finally:
        student.train(was_training)
    t_out, s_out = outs
    if not isinstance(t_out, torch.Tensor) or not isinstance(s_out, torch.Tensor) or t_out.dim() != 2:
        raise ConfigError("teacher and student must return a logits tensor [N, C]")
    if t_out.shape != s_out.shape:
        raise ConfigError(
            f"teacher and student output shapes are incompatible. Teacher: {tuple(t_out.shape)}, "
            f"Student: {tuple(s_out.shape)} (both must be [batch, classes])"
        )
    distiller._checked = True  # the pair is checked: Distiller.run_epochs must not re-run one input through both


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
