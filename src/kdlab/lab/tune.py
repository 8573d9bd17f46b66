"""``kdlab tune``: an Optuna search for the distillation setting that helps, then an honest check.

The search runs one study (``study.db``, sqlite, in the tune folder) over the distilled arm's
method, α, T and the method's own options (:data:`SPACE`, docs/tune.md). Every trial trains one
distilled student exactly as the lab does (:meth:`kdlab.lab.run.LabSession.fit_student`): from
the same initial weights, in the same data order, against one shared teacher — trained (or
loaded) once, its weights saved in the tune folder, its logits from the teacher cache — so trials
differ only by their settings. A trial's value is the student's **validation** accuracy at the
epoch ``train.select`` picks (``best-val``: ``max_e acc_val(e)``; ``last``: ``acc_val(E)``); the
test split is never evaluated during the search. Trials whose per-epoch validation accuracy
(best so far for ``best-val``) falls below the median of earlier trials at the same epoch are
pruned (``MedianPruner``).

The search ends with a comparison of the best setting against scratch over K seeds
(:func:`kdlab.lab.compare.run_comparison`), where test accuracy is read for the first time, and
``best.yaml``, a runnable experiment with exactly the compared settings (floats rounded to 3
significant digits before the trial trains, so the search, best.yaml and the comparison agree).

Resuming (``--resume DIR``) reopens the study: finished trials (COMPLETE or PRUNED) are kept and
never re-run, trials left RUNNING by a killed process are marked FAIL and not counted, and the
search continues until the study holds ``trials`` finished trials; a finished comparison is not
redone. Folder layout and record schema: docs/tune.md.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from kdlab.config.schema import DistillConfig, ExperimentConfig
from kdlab.errors import ConfigError, KdlabError, RunInterrupted, TrainingError
from kdlab.io import atomic_write_json, atomic_write_text, save_weights
from kdlab.kd.objective import METHODS
from kdlab.lab.compare import parse_methods, resolve_seeds, split_top_level
from kdlab.lab.recovery import RunLock
from kdlab.lab.run import LabSession, ProgressFactory, check_inputs
from kdlab.lab.runtime import Runtime
from kdlab.runs import CHECKPOINTS_DIR, create_run_dir, has_config, is_comparison, read_config, write_config, write_env
from kdlab.train.loop import History, Progress, resolve_device
from kdlab.train.reproduce import deterministic_mode
from kdlab.version import __version__

if TYPE_CHECKING:
    import optuna

TUNE_FILE = "tune.json"
STUDY_FILE = "study.db"
TRIALS_FILE = "trials.csv"
BEST_FILE = "best.yaml"
TEACHER_FILE = "teacher.safetensors"
SEARCH_DIR = "search"
STUDY_NAME = "kdlab-tune"
TUNE_DAMAGED = "the tune folder is damaged — restore the file or start a new search"

DEFAULT_METHODS = ("kd", "dkd", "dist")
DEFAULT_SEEDS = 3
PRUNER_STARTUP_TRIALS = 5
"""The median pruner prunes nothing until this many trials have finished."""
MAX_FAILURES_IN_A_ROW = 3
"""A search stops when this many trials in a row fail (a non-finite loss)."""
FEATURE_METHODS = ("fitnet", "at")


@dataclass(frozen=True)
class Param:
    """One searched ``distill.<key>``: uniform or log-uniform on ``[low, high]``, or true/false."""

    key: str
    kind: Literal["uniform", "log", "bool"]
    low: float = 0.0
    high: float = 1.0
    methods: tuple[str, ...] | None = None
    """The methods that take it; None: every method."""

    def describe(self) -> str:
        if self.kind == "bool":
            return "{true, false}"
        return f"{'log-uniform' if self.kind == 'log' else 'uniform'} [{self.low:g}, {self.high:g}]"


SPACE: tuple[Param, ...] = (
    Param("alpha", "uniform", 0.0, 0.95),
    Param("temperature", "log", 1.0, 20.0, ("kd", "logit-std", "dkd", "dist")),
    Param("t_squared", "bool", methods=("kd", "logit-std")),
    Param("standardize", "bool", methods=("kd", "dkd")),
    Param("dkd_alpha", "uniform", 0.5, 2.0, ("dkd",)),
    Param("dkd_beta", "log", 1.0, 16.0, ("dkd",)),
    Param("dist_beta", "uniform", 0.5, 4.0, ("dist",)),
    Param("dist_gamma", "uniform", 0.5, 4.0, ("dist",)),
    Param("use_unlabeled", "bool"),
)
"""The search space: ``method`` is drawn first (from ``--methods``), then the parameters that
method takes (conditional parameters). ``use_unlabeled`` only when ``data.unlabeled`` is set."""
PARAM_KEYS = tuple(p.key for p in SPACE)
TRIAL_COLUMNS = ("number", "state", "value", "method", *PARAM_KEYS, "epochs", "seconds", "arm", "error")


def space_for(method: str, *, transfer: bool) -> list[Param]:
    """The parameters searched for ``method`` (``transfer``: a transfer set is configured)."""
    return [p for p in SPACE if (p.methods is None or method in p.methods) and (p.key != "use_unlabeled" or transfer)]


def round3(x: float) -> float:
    """``x`` rounded to 3 significant digits (what a trial trains with and best.yaml records)."""
    return float(f"{x:.3g}") if x != 0 else 0.0


def format_value(v: Any) -> str:
    """A setting as a ``method:key=value`` spec writes it: ``true``/``false``, positional floats."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        import numpy as np

        return str(np.format_float_positional(v, trim="-"))
    return str(v)


def arm_spec(settings: dict[str, Any]) -> str:
    """``{"method": "kd", "alpha": 0.31, …}`` -> ``kd:alpha=0.31:…`` (the arm's name in the comparison)."""
    parts = [str(settings["method"])]
    parts += [f"{k}={format_value(settings[k])}" for k in PARAM_KEYS if k in settings]
    return ":".join(parts)


def parse_search_methods(methods: str | Sequence[str] | None, cfg: ExperimentConfig) -> list[str]:
    """``"kd,dkd"`` -> ``["kd", "dkd"]`` (default :data:`DEFAULT_METHODS`): registered names only,
    each once; fitnet and at only when the experiment names ``distill.feature_pairs``."""
    if methods is None:
        return list(DEFAULT_METHODS)
    items = split_top_level(methods, ",") if isinstance(methods, str) else list(methods)
    names = [m.strip() for m in items if m.strip()]
    if not names:
        raise ConfigError("--methods: give at least one method, e.g. --methods kd,dkd")
    for name in names:
        if ":" in name:
            raise ConfigError(
                f"--methods: '{name}': tune searches each method's settings itself; give method names only, e.g. kd,dkd"
            )
        if name not in METHODS:
            raise ConfigError(f"--methods: {METHODS.unknown_message(name)}")
        if name in FEATURE_METHODS and not cfg.distill.feature_pairs:
            raise ConfigError(
                f"--methods: {name} needs distill.feature_pairs (student layer -> teacher layer) in the experiment, "
                f"e.g. --set 'distill.feature_pairs={{layer1: layer2}}'; or leave {name} out"
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"--methods: a method is given twice ({','.join(names)}); give each once")
    return names


def run_tune(
    cfg: ExperimentConfig | None,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    methods: str | Sequence[str] | None = None,
    seeds: int | None = None,
    out: Path | None = None,
    resume: Path | None = None,
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> Path:
    """Search the distillation settings of ``cfg`` on validation accuracy, then compare the best
    against scratch over ``seeds`` seeds; returns the tune folder (layout: docs/tune.md).

    Args:
        cfg: the experiment (None with ``resume``: the one recorded in the folder).
        trials: finished trials (COMPLETE + PRUNED) the study must hold; required for a new search,
            default the recorded number when resuming.
        timeout: start no new trial after this many seconds (the search then ends with what it has).
        methods: methods to search over, e.g. ``"kd,dkd"`` (default kd, dkd, dist); a resumed
            search keeps the ones it started with.
        seeds: seeds of the final comparison (default 3, or the recorded number).
        out: parent folder of the new tune folder (default ``cfg.out``).
        resume: a tune folder to continue.
        progress, log, stop: as for :func:`kdlab.lab.run.run_lab`.
        pruner: the study's pruner; default ``MedianPruner(n_startup_trials=5,
            n_warmup_steps=student.epochs // 3)`` (a trial is never pruned after its last epoch).

    Raises:
        ConfigError / KdlabError: bad input (one line; nothing written).
        RunInterrupted: ``stop`` answered True; ``run_dir`` is the tune folder to resume.
    """
    say = log or (lambda _msg: None)
    _refuse_distributed()
    for name, value in (("--trials", trials), ("--seeds", seeds)):
        if value is not None and value < 1:
            raise ConfigError(f"{name}: must be >= 1 (got {value})")
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise ConfigError(f"--timeout: must be a positive number of seconds (got {timeout})")
    if resume is not None:
        tune_dir = Path(resume)
        record = read_tune(tune_dir)
        stored = read_config(tune_dir, hint=TUNE_DAMAGED)
        if cfg is not None and _differs(stored, cfg):
            raise KdlabError(f"--resume {tune_dir}: the experiment differs from the one this search was started with")
        cfg = stored
        if methods is not None and parse_search_methods(methods, cfg) != record["methods"]:
            raise ConfigError(
                f"--methods: this search was started with {','.join(record['methods'])}; "
                "a resumed study keeps its methods (start a new search for others)"
            )
        record["trials"] = trials if trials is not None else record["trials"]
        record["seeds"] = seeds if seeds is not None else record["seeds"]
        record["timeout"] = timeout
        data = check_inputs(_search_config(cfg, tune_dir), _method_arms(record["methods"], cfg), new_run=False)
        say(f"resuming {tune_dir}")
    else:
        if cfg is None:
            raise ConfigError("tune: give an experiment (a preset name or a .yaml file), or --resume DIR")
        if trials is None:
            raise ConfigError("--trials: give the number of trials to run, e.g. --trials 20")
        names = parse_search_methods(methods, cfg)
        data = check_inputs(cfg, _method_arms(names, cfg))  # a bad input fails here, before any folder
        if len(data.val) == 0:
            raise ConfigError(
                f"data.val_fraction: {cfg.data.val_fraction:g} leaves no validation split, and tune scores trials "
                "on it (never on test); set e.g. --set data.val_fraction=0.1"
            )
        tune_dir = create_run_dir(out if out is not None else cfg.out, f"{cfg.name}-tune")
        write_config(tune_dir, cfg.model_dump(mode="json"))
        write_env(tune_dir, resolve_device(cfg.device), cfg.seed, cfg.deterministic)
        record = {
            "schema_version": 1,
            "kind": "tune",
            "kdlab_version": __version__,
            "name": cfg.name,
            "status": "searching",
            "study": STUDY_FILE,
            "study_name": STUDY_NAME,
            "trials": trials,
            "timeout": timeout,
            "methods": names,
            "seeds": seeds if seeds is not None else DEFAULT_SEEDS,
            "objective": f"validation accuracy of the distilled student at the epoch train.select picks "
            f"({cfg.train.select})",
            "selection": cfg.train.select,
            "space": {
                m: {p.key: p.describe() for p in space_for(m, transfer=cfg.data.unlabeled is not None)} for m in names
            },
        }
        write_tune(tune_dir, record)
    with RunLock(tune_dir):
        try:
            return _tune(cfg, tune_dir, record, data, progress=progress, say=say, stop=stop, pruner=pruner)
        except (RunInterrupted, KeyboardInterrupt) as e:
            with contextlib.suppress(Exception):
                write_tune(tune_dir, {**read_tune(tune_dir), "status": "interrupted"})
            if isinstance(e, RunInterrupted):
                e.run_dir = tune_dir
            raise


def _tune(
    cfg: ExperimentConfig,
    tune_dir: Path,
    record: dict[str, Any],
    data: Any,
    *,
    progress: ProgressFactory | None,
    say: Callable[[str], None],
    stop: Callable[[], bool] | None,
    pruner: optuna.pruners.BasePruner | None,
) -> Path:
    import optuna

    record["status"] = "searching"
    write_tune(tune_dir, record)
    study = open_study(tune_dir, cfg, pruner=pruner)
    _fail_stale_trials(study, say)
    shutil.rmtree(tune_dir / SEARCH_DIR / CHECKPOINTS_DIR, ignore_errors=True)  # of trials that did not finish
    _search(cfg, tune_dir, record, data, study, progress=progress, say=say, stop=stop)
    write_trials_csv(tune_dir, study)
    finished = _finished(study)
    record["finished_trials"] = len(finished)
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        write_tune(tune_dir, record)
        raise KdlabError(
            f"{tune_dir}: no trial completed ({len(finished)} pruned); run more with: "
            f"kdlab tune --resume {_quote(tune_dir)} --trials {record['trials'] + 5}"
        )
    best = study.best_trial
    spec = str(best.user_attrs["arm"])
    best_dc = parse_methods([spec], cfg.distill)[0].distill
    best_cfg = cfg.model_copy(update={"distill": best_dc})
    record["best"] = {
        "number": best.number,
        "value": best.value,
        "arm": spec,
        "distill": best_dc.model_dump(mode="json"),
    }
    write_best_yaml(tune_dir, best_cfg, best.number, float(best.value or 0.0))
    say(f"best: trial {best.number}, {spec} (validation accuracy {100 * float(best.value or 0):.2f}%)")
    record["status"] = "comparing"
    write_tune(tune_dir, record)
    comp_dir = _compare_best(tune_dir, best_cfg, spec, int(record["seeds"]), progress=progress, say=say, stop=stop)
    from kdlab.report.verdict import verdicts
    from kdlab.runs import read_comparison

    comp = read_comparison(comp_dir)
    record["comparison"] = {"folder": comp_dir.name, "arm": spec, "seeds": comp.get("seeds"), "status": comp["status"]}
    record["verdict"] = next((v for v in verdicts(comp) if v.get("arm") == spec), None)
    record["status"] = "complete"
    write_tune(tune_dir, record)
    return tune_dir


def open_study(tune_dir: Path, cfg: ExperimentConfig, *, pruner: optuna.pruners.BasePruner | None = None) -> Any:
    """The tune folder's study (created on first use), sampler ``TPESampler(seed=cfg.seed + n)``
    with ``n`` the trials already in it (a resumed search does not redraw the first trials'
    random settings), pruner as :func:`run_tune` says."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{(Path(tune_dir) / STUDY_FILE).resolve().as_posix()}"
    pruner = pruner or optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=cfg.student.epochs // 3
    )
    try:
        study = optuna.create_study(
            storage=url, study_name=STUDY_NAME, load_if_exists=True, direction="maximize", pruner=pruner
        )
    except Exception as e:  # a damaged or foreign study.db
        raise KdlabError(
            f"{Path(tune_dir) / STUDY_FILE}: cannot open the study ({type(e).__name__}); {TUNE_DAMAGED}"
        ) from None
    study.sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(study.trials))
    return study


def _fail_stale_trials(study: Any, say: Callable[[str], None]) -> None:
    """Trials left RUNNING by a killed process (the folder is locked, so none is running now)
    become FAIL: never counted, never re-run."""
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(t.number, state=TrialState.FAIL)
        say(f"trial {t.number}: left unfinished by an interrupted search; marked FAIL (not counted)")


def _finished(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return list(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _search(
    cfg: ExperimentConfig,
    tune_dir: Path,
    record: dict[str, Any],
    data: Any,
    study: Any,
    *,
    progress: ProgressFactory | None,
    say: Callable[[str], None],
    stop: Callable[[], bool] | None,
) -> None:
    """Run trials until the study holds ``record["trials"]`` finished ones (or ``timeout``)."""
    import optuna

    wanted, timeout = int(record["trials"]), record.get("timeout")
    done = len(_finished(study))
    if done >= wanted:
        say(f"search: the study holds {done} finished trials (asked: {wanted}); no new trial")
        return
    start = time.monotonic()
    scfg = _search_config(cfg, tune_dir)
    search_dir = tune_dir / SEARCH_DIR
    search_dir.mkdir(exist_ok=True)
    current = _Current()

    def factory(arm: str) -> Progress | None:
        inner = progress(arm) if progress is not None else None
        if current.trial is None or arm != current.arm:
            return inner
        current.reporter = _TrialReporter(current.trial, inner, cfg.student.epochs, cfg.train.select)
        return current.reporter

    rt = Runtime.start(scfg)
    try:
        with deterministic_mode(cfg.deterministic):
            session = LabSession.open(scfg, data, search_dir, rt, progress=factory, log=say, resuming=False, stop=stop)
            teacher = session.fit_teacher()
            if scfg.teacher.checkpoint is None and scfg.teacher.epochs > 0:
                save_weights(teacher, tune_dir / TEACHER_FILE, {"arm": "teacher", "kdlab": __version__})
                shutil.rmtree(search_dir / CHECKPOINTS_DIR / "teacher", ignore_errors=True)
                say(f"teacher: saved {tune_dir / TEACHER_FILE} (a resumed search loads it)")
            initial = session.initial_student(teacher)
            failures = 0
            transfer = cfg.data.unlabeled is not None
            while (done := len(_finished(study))) < wanted:
                if timeout is not None and time.monotonic() - start >= timeout:
                    say(f"--timeout {timeout:g} s: no new trial; {done} of {wanted} trials finished")
                    break
                if stop is not None and stop():
                    raise RunInterrupted(getattr(stop, "signum", None))
                trial = study.ask()
                current.trial, current.arm, current.reporter = trial, f"trial-{trial.number}", None
                try:
                    settings = suggest(trial, record["methods"], transfer=transfer)
                    spec = arm_spec(settings)
                    trial.set_user_attr("arm", spec)
                    trial.set_user_attr("settings", settings)
                    distill = parse_methods([spec], cfg.distill)[0].distill
                    state = _run_trial(study, trial, spec, session, (initial, teacher), distill, current, say)
                except BaseException:  # interrupted, or a bug: never leave the trial RUNNING
                    with contextlib.suppress(Exception):
                        study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                    raise
                finally:  # the trial's checkpoints go, trials.csv says how it ended
                    current.trial = None
                    shutil.rmtree(search_dir / CHECKPOINTS_DIR / current.arm, ignore_errors=True)
                    with contextlib.suppress(OSError):
                        write_trials_csv(tune_dir, study)
                failures = failures + 1 if state == "FAIL" else 0
                if failures >= MAX_FAILURES_IN_A_ROW:
                    raise TrainingError(
                        f"{failures} trials in a row failed (see the error column of {tune_dir / TRIALS_FILE}); "
                        f"check the experiment, then: kdlab tune --resume {_quote(tune_dir)}"
                    )
    finally:
        rt.finish()
        with contextlib.suppress(OSError):  # empty once every trial's checkpoints are removed
            (search_dir / CHECKPOINTS_DIR).rmdir()


@dataclass
class _Current:
    """The trial being trained, so that the progress factory can report its epochs to it."""

    trial: Any = None
    arm: str = ""
    reporter: _TrialReporter | None = None


class _TrialReporter:
    """Progress of one trial's arm: forwards to the user's progress, reports each epoch's value
    (validation accuracy, best so far with ``best-val``) to the trial and prunes it when the
    pruner says so — never after its last epoch."""

    def __init__(self, trial: Any, inner: Progress | None, epochs: int, select: str) -> None:
        self.trial, self.inner, self.epochs, self.select = trial, inner, epochs, select
        self.value = -math.inf
        self.done = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if self.inner is not None:
            self.inner.epoch_start(epoch, epochs, steps)

    def step(self) -> None:
        if self.inner is not None:
            self.inner.step()

    def epoch_end(self, row: dict[str, Any]) -> None:
        import optuna

        if self.inner is not None:
            self.inner.epoch_end(row)
        epoch, acc = int(row["epoch"]), row.get("val_accuracy")
        self.done = epoch
        if acc is None:
            return
        self.value = max(self.value, float(acc)) if self.select == "best-val" else float(acc)
        self.trial.report(self.value, step=epoch)
        if epoch < self.epochs and self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")


def suggest(trial: Any, methods: Sequence[str], *, transfer: bool) -> dict[str, Any]:
    """The trial's settings: ``method`` first, then that method's parameters (:func:`space_for`),
    floats rounded to 3 significant digits (what the trial trains with)."""
    method = trial.suggest_categorical("method", list(methods))
    settings: dict[str, Any] = {"method": method}
    for p in space_for(method, transfer=transfer):
        if p.kind == "bool":
            settings[p.key] = bool(trial.suggest_categorical(p.key, [True, False]))
        else:
            settings[p.key] = round3(trial.suggest_float(p.key, p.low, p.high, log=p.kind == "log"))
    return settings


def _run_trial(
    study: Any,
    trial: Any,
    spec: str,
    session: LabSession,
    models: tuple[Any, Any],
    distill: DistillConfig,
    current: _Current,
    say: Callable[[str], None],
) -> str:
    """Train one trial's student (``models``: the initial student, the teacher) and tell the study
    how it ended; returns the trial's state name."""
    import optuna
    from optuna.trial import TrialState

    initial, teacher = models
    try:
        _, history = session.fit_student(current.arm, initial, teacher, distill)
    except optuna.TrialPruned:
        epochs = current.reporter.done if current.reporter is not None else 0
        trial.set_user_attr("epochs", epochs)
        study.tell(trial, state=TrialState.PRUNED)
        say(f"trial {trial.number} ({spec}): pruned after epoch {epochs}")
        return "PRUNED"
    except TrainingError as e:
        trial.set_user_attr("error", str(e)[:300])
        study.tell(trial, state=TrialState.FAIL)
        say(f"trial {trial.number} ({spec}): failed: {e}")
        return "FAIL"
    value = selected_value(history)
    trial.set_user_attr("epochs", len(history))
    trial.set_user_attr("selected_epoch", history.selected_epoch)
    study.tell(trial, value)
    best = study.best_trial
    say(
        f"trial {trial.number} ({spec}): validation accuracy {100 * value:.2f}% "
        f"(best {100 * float(best.value):.2f}%, trial {best.number})"
    )
    return "COMPLETE"


def selected_value(history: History) -> float:
    """Validation accuracy at the epoch ``train.select`` picked (``history.selected_epoch``)."""
    rows = {int(r["epoch"]): r for r in history}
    row = rows.get(int(history.selected_epoch or 0), history[-1])
    return float(row["val_accuracy"])


def _compare_best(
    tune_dir: Path,
    best_cfg: ExperimentConfig,
    spec: str,
    seeds: int,
    *,
    progress: ProgressFactory | None,
    say: Callable[[str], None],
    stop: Callable[[], bool] | None,
) -> Path:
    """The comparison of ``spec`` against scratch in the tune folder: a finished one is kept, an
    unfinished one resumed, else a new one run; ``report.html`` written beside it."""
    from kdlab.lab import compare
    from kdlab.report.render import write_report
    from kdlab.runs import REPORT_FILE, read_comparison

    comp_dir = find_comparison(tune_dir, spec)
    if comp_dir is not None:
        comp = read_comparison(comp_dir)
        wanted = set(resolve_seeds(seeds, best_cfg.seed))
        if comp["status"] == "complete" and wanted <= set(comp["seeds"]) and (comp_dir / REPORT_FILE).is_file():
            say(f"comparison of {spec}: already complete in {comp_dir}")
            return comp_dir
        comp_dir = compare.run_comparison(best_cfg, None, seeds, resume=comp_dir, progress=progress, log=say, stop=stop)
    else:
        say(f"comparing {spec} against scratch over {seeds} seed(s) (test accuracy is read from here on)")
        comp_dir = compare.run_comparison(best_cfg, [spec], seeds, out=tune_dir, progress=progress, log=say, stop=stop)
    try:
        write_report(comp_dir)
    except Exception as e:  # the comparison is recorded; the report can be written again
        say(f"warning: report.html not written ({type(e).__name__}: {e}); retry with `kdlab report {comp_dir}`")
    return comp_dir


def find_comparison(tune_dir: Path, spec: str) -> Path | None:
    """The tune folder's comparison folder of ``spec`` alone (the latest), or None."""
    from kdlab.runs import read_comparison

    found = None
    for folder in sorted(p for p in Path(tune_dir).iterdir() if p.is_dir() and is_comparison(p)):
        with contextlib.suppress(KdlabError):
            if list(read_comparison(folder).get("methods", {})) == [spec]:
                found = folder
    return found


def write_best_yaml(tune_dir: Path, best_cfg: ExperimentConfig, number: int, value: float) -> Path:
    """``best.yaml``: the experiment with the best trial's distill settings, runnable with ``kdlab run``."""
    path = Path(tune_dir) / BEST_FILE
    head = (
        f"# kdlab tune: the best of the search in {Path(tune_dir).name} (trial {number}, validation accuracy "
        f"{100 * value:.2f}%)\n# run it with: kdlab run {BEST_FILE}\n"
    )
    atomic_write_text(path, head + yaml.safe_dump(best_cfg.model_dump(mode="json"), sort_keys=False))
    return path


def write_trials_csv(tune_dir: Path, study: Any) -> None:
    """``trials.csv``: one row per trial (:data:`TRIAL_COLUMNS`): state, value (validation
    accuracy; a pruned trial's last reported one), the settings it trained with, epochs, seconds."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(TRIAL_COLUMNS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for t in study.get_trials(deepcopy=False):
        settings = t.user_attrs.get("settings", {})
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete is not None and t.datetime_start is not None
            else ""
        )
        writer.writerow(
            {
                "number": t.number,
                "state": t.state.name,
                "value": "" if t.value is None else t.value,
                **{k: json.dumps(v) if isinstance(v, bool) else v for k, v in settings.items()},
                "epochs": t.user_attrs.get("epochs", ""),
                "seconds": seconds,
                "arm": t.user_attrs.get("arm", ""),
                "error": t.user_attrs.get("error", ""),
            }
        )
    atomic_write_text(Path(tune_dir) / TRIALS_FILE, buf.getvalue())


def write_tune(tune_dir: Path, record: dict[str, Any]) -> None:
    """``tune.json``, atomically."""
    atomic_write_json(Path(tune_dir) / TUNE_FILE, record)


def is_tune(folder: Path) -> bool:
    """Whether ``folder`` is a tune folder (it holds ``tune.json``)."""
    return (Path(folder) / TUNE_FILE).is_file()


def read_tune(tune_dir: Path) -> dict[str, Any]:
    """``tune.json`` of a tune folder, checked: one line for a folder that is not one or a damaged record."""
    from kdlab.records import read_json_record

    tune_dir = Path(tune_dir)
    if not is_tune(tune_dir) or not has_config(tune_dir):
        raise KdlabError(
            f"--resume {tune_dir}: not a tune folder (no {TUNE_FILE}); give a folder written by kdlab tune"
        )
    data = read_json_record(tune_dir / TUNE_FILE, hint=TUNE_DAMAGED)
    ok = (
        isinstance(data, dict)
        and data.get("kind") == "tune"
        and isinstance(data.get("methods"), list)
        and all(isinstance(m, str) for m in data["methods"])
        and all(
            isinstance(data.get(k), int) and not isinstance(data.get(k), bool) and data[k] >= 1
            for k in ("trials", "seeds")
        )
    )
    if not ok:
        raise KdlabError(
            f"{tune_dir / TUNE_FILE}: not a kdlab tune record (kind, methods, trials, seeds); {TUNE_DAMAGED}"
        )
    return dict(data)


def _search_config(cfg: ExperimentConfig, tune_dir: Path) -> ExperimentConfig:
    """The search's experiment: the saved search teacher (a resumed search) as ``teacher.checkpoint``."""
    teacher_file = Path(tune_dir) / TEACHER_FILE
    if cfg.teacher.checkpoint is not None or not teacher_file.is_file():
        return cfg
    return cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"checkpoint": teacher_file})})


def _method_arms(methods: Sequence[str], cfg: ExperimentConfig) -> dict[str, DistillConfig]:
    """One arm per searched method with the experiment's settings: what check_inputs checks."""
    return {m: parse_methods([m], cfg.distill)[0].distill for m in methods}


def _refuse_distributed() -> None:
    from kdlab.train import distributed

    if distributed.requested():
        raise ConfigError("tune: runs in one process; start it without torchrun")


def _differs(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    x, y = a.model_dump(mode="json"), b.model_dump(mode="json")
    x.pop("out", None)
    y.pop("out", None)
    return bool(x != y)


def _quote(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))
