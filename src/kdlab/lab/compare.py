"""Several seeds, several KD methods, one honest comparison.

For every seed ``s`` a sub-folder ``seed-<s>/`` holds one lab run (:class:`kdlab.lab.run.LabSession`):
the teacher (trained once per seed, or loaded), the scratch student, and one distilled student
per method — all students start from the same initial weights and see the same data order, so
per seed the arms differ only by their objective. ``comparison.json`` then gives, per arm, the
mean test accuracy with a t-interval across seeds, and per distilled arm the paired difference
to scratch with its interval and paired t-test p-value (:mod:`kdlab.report.stats`). The reported epoch of
each arm is chosen on the validation split only (``train.select``). Schema: ``docs/compare.md``.

A method is a registered ``distill.method`` name, optionally followed by ``:key=value`` settings
of the ``distill`` section, e.g. ``kd``, ``kd:temperature=8:alpha=0.5``; that whole text names the
arm. Each (method, seed) cell is recorded atomically in its seed folder's results.json when it
finishes; resuming a comparison folder skips the cells already recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kdlab.config.load import format_validation_error, parse_value
from kdlab.config.schema import DistillConfig, ExperimentConfig
from kdlab.errors import ConfigError, KdlabError
from kdlab.kd.objective import METHODS, neutral, refuses
from kdlab.lab.run import ProgressFactory, check_inputs, run_lab
from kdlab.records import COMPARISON_DAMAGED
from kdlab.report import stats
from kdlab.report.collect import BASE_ARMS, EXTRA_METRICS, METRIC, summarize_arms
from kdlab.report.verdict import verdicts
from kdlab.runs import (
    COMPARISON_FILE,
    checkpoint_folders,
    create_run_dir,
    has_config,
    has_results,
    is_comparison,
    read_config,
    read_results,
    seed_dir,
    write_comparison_files,
    write_config,
    write_env,
)
from kdlab.runs import read_comparison as _read_comparison
from kdlab.train.loop import resolve_device
from kdlab.version import __version__

CSV_COLUMNS = ("arm", "seed", METRIC, *EXTRA_METRICS)


@dataclass(frozen=True)
class MethodSpec:
    """One distilled arm: its name as typed (``kd:temperature=8``), its distill settings, and notes
    on settings of the experiment it did not inherit."""

    arm: str
    distill: DistillConfig
    notes: tuple[str, ...] = ()


def parse_methods(methods: str | Sequence[str], base: DistillConfig) -> list[MethodSpec]:
    """``"kd,kd:temperature=8"`` (or a list of such items) -> one :class:`MethodSpec` per item.

    Settings after ``:`` override ``base`` (the experiment's distill section) for that arm only.
    A method-specific setting of ``base`` that the arm's method does not take (the lab preset's
    ``t_squared: false`` for ``dist``, which always scales by T²) is not inherited: the arm keeps
    that key's default and the spec carries a note saying so. Set on the arm itself
    (``dist:t_squared=false``), it is an error as in an experiment file. Unknown method names and
    invalid settings raise :class:`ConfigError`.
    """
    items = split_top_level(methods, ",") if isinstance(methods, str) else list(methods)
    items = [m.strip() for m in items if m.strip()]
    if not items:
        raise ConfigError("--methods: give at least one method, e.g. --methods kd (known: " + _known() + ")")
    specs: list[MethodSpec] = []
    for item in items:
        name, *settings = split_top_level(item, ":")
        if name not in METHODS:
            raise ConfigError(f"--methods: {METHODS.unknown_message(name)}")
        raw = base.model_dump(mode="json") | {"method": name}
        own: set[str] = set()
        for setting in settings:
            key, sep, text = setting.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--methods {item!r}: expected method:key=value, e.g. kd:temperature=8")
            raw[key.strip()] = parse_value(text, f"--methods {name}:{key.strip()[:40]}")  # bounded YAML
            own.add(key.strip())
        notes: list[str] = []
        # A distill.* setting the arm's method refuses (its options model's ``refuses``) is not
        # inherited from the experiment: the arm keeps the default, with a note, unless it sets it itself.
        for key in METHODS.get(name).options.refuses:
            default = neutral(key)
            if key not in own and refuses(name, key, raw[key]):
                notes.append(
                    f"{item}: distill.{key}={json.dumps(raw[key])} from the experiment "
                    f"does not apply to {name}; this arm uses {key}={json.dumps(default)}"
                )
                raw[key] = default
        try:
            distill = DistillConfig.model_validate(raw)
        except ValidationError as e:
            raise ConfigError(f"--methods {item!r}: distill.{format_validation_error(e)}") from None
        if item in BASE_ARMS or any(s.arm == item for s in specs):
            raise ConfigError(f"--methods: '{item}' is given twice or names a base arm; each arm once")
        specs.append(MethodSpec(item, distill, tuple(notes)))
    return specs


def split_top_level(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside brackets, braces and quotes, so a setting's value can be a
    YAML flow mapping or list: ``fitnet:feature_pairs={layer1: layer2},kd`` is two items, and
    ``fitnet:feature_pairs={layer1: layer2}`` is a method and one setting."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def resolve_seeds(seeds: int | Sequence[int], first: int = 0) -> list[int]:
    """``n`` -> ``[first, …, first + n − 1]``; an explicit list is checked (≥ 0, no repeats)."""
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"--seeds: must be >= 1 (got {seeds}); 3 or more give confidence intervals")
        return [first + i for i in range(seeds)]
    out = [int(s) for s in seeds]
    if not out or any(s < 0 for s in out) or len(set(out)) != len(out):
        raise ConfigError(f"seeds: need distinct seeds >= 0 (got {out})")
    return out


DEFAULT_METHODS = "kd"
DEFAULT_SEEDS = 3


def run_comparison(
    cfg: ExperimentConfig,
    methods: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    *,
    out: Path | None = None,
    resume: Path | None = None,
    teacher_checkpoint: Path | None = None,
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Path:
    """Run (or resume) a multi-seed, multi-method comparison; returns its folder.

    Args:
        cfg: the experiment; its ``seed`` is the first seed when ``seeds`` is a count.
        methods: ``"kd,dkd"`` or a list of method specs (see :func:`parse_methods`); default
            ``kd`` for a new comparison, the recorded methods only when resuming.
        seeds: how many seeds, or the seeds themselves; default 3 for a new comparison, the
            recorded seeds only when resuming.
        out: parent folder of the new comparison folder (default ``cfg.out``); when ``out`` is
            itself a comparison folder it is resumed.
        resume: a comparison folder to continue (see also :func:`resume_comparison`): finished
            (method, seed) cells are skipped, the unfinished ones of the methods and seeds it was
            started with are trained, and ``methods``/``seeds`` not in it yet are added (and
            logged). Its config must equal ``cfg``.
        teacher_checkpoint: load the teacher of every seed from this file instead of training it.
        progress, log, stop: as for :func:`kdlab.lab.run.run_lab` (an interrupted cell continues from
            its last complete epoch on resume).
    """
    say = log or (lambda _msg: None)
    if teacher_checkpoint is not None:
        cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"checkpoint": teacher_checkpoint})})
    if resume is None and out is not None and is_comparison(Path(out)):
        resume = Path(out)
    if resume is None:  # resuming, what is not given is what the folder recorded (nothing is added)
        methods = DEFAULT_METHODS if methods is None else methods
        seeds = DEFAULT_SEEDS if seeds is None else seeds
    specs = [] if methods is None else parse_methods(methods, cfg.distill)
    for note in (n for s in specs for n in s.notes):
        say(f"note: {note}")
    seed_list = [] if seeds is None else resolve_seeds(seeds, cfg.seed)
    if resume is not None:
        comp_dir = Path(resume)
        _check_resumable(comp_dir, cfg)
        say(f"resuming {comp_dir}")
    else:
        # data, model names, teacher checkpoint, each method's settings: a bad input leaves no folder
        check_inputs(cfg, {s.arm: s.distill for s in specs})
        comp_dir = create_run_dir(out if out is not None else cfg.out, f"{cfg.name}-compare")
        write_config(comp_dir, cfg.model_dump(mode="json"))
        write_env(comp_dir, resolve_device(cfg.device), cfg.seed, cfg.deterministic)
    previous = _read_comparison(comp_dir) if resume is not None else {}
    if resume is not None:
        _check_seed_folders(comp_dir, previous["seeds"])
    # A resumed comparison finishes every arm and seed it was started with, plus the new ones.
    stored = [MethodSpec(a, DistillConfig.model_validate(m)) for a, m in previous.get("methods", {}).items()]
    given = {s.arm: s for s in specs}  # in the order the comparison was started with, then the new ones
    specs = [*(given.pop(s.arm, s) for s in stored), *given.values()]
    arms = {s.arm: s.distill.model_dump(mode="json") for s in specs}
    all_seeds = list(dict.fromkeys([*previous.get("seeds", []), *seed_list]))
    if resume is not None:
        _say_additions(say, comp_dir, previous, list(arms), all_seeds)
    write_comparison(comp_dir, cfg, arms, all_seeds, status="running")

    for seed in all_seeds:
        folder = seed_dir(comp_dir, seed)
        folder.mkdir(exist_ok=True)
        say(f"seed {seed}: {folder}")
        seed_cfg = cfg.model_copy(update={"seed": seed})
        started = has_config(folder)
        run_lab(
            seed_cfg,
            run_dir=None if started else folder,
            resume=folder if started else None,
            arms={s.arm: s.distill for s in specs},
            progress=progress,
            log=log,
            stop=stop,
        )
        write_comparison(comp_dir, cfg, arms, all_seeds, status="running")
    write_comparison(comp_dir, cfg, arms, all_seeds, status="complete")
    return comp_dir


def resume_comparison(
    comp_dir: Path,
    *,
    methods: str | Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Path:
    """Continue a comparison folder with the settings it was started with, read from the folder:
    the experiment (``config.resolved.yaml``: preset or file, every ``--set``, the teacher
    checkpoint), the seeds and the methods (``comparison.json``). ``methods``/``seeds`` add
    methods or seeds not in it yet (a count ``n`` means the first recorded seed and the next
    ``n − 1``); the recorded ones are always finished. Other arguments as for :func:`run_comparison`.
    """
    comp_dir = Path(comp_dir)
    if not is_comparison(comp_dir):
        raise KdlabError(f"--resume {comp_dir}: not a comparison folder (no {COMPARISON_FILE}); give one to resume")
    cfg = read_config(comp_dir, hint=COMPARISON_DAMAGED)
    return run_comparison(cfg, methods, seeds, resume=comp_dir, progress=progress, log=log, stop=stop)


def _say_additions(
    say: Callable[[str], None], comp_dir: Path, previous: dict[str, Any], arms: list[str], seeds: list[int]
) -> None:
    """Log the methods and seeds a resume adds to what the folder recorded (they are trained too)."""
    new_arms = [a for a in arms if a not in previous.get("methods", {})]
    new_seeds = [s for s in seeds if s not in previous.get("seeds", [])]
    if new_arms:
        say(f"adding method(s) {', '.join(new_arms)} to {comp_dir}")
    if new_seeds:
        say(f"adding seed(s) {', '.join(map(str, new_seeds))} to {comp_dir}")


def _known() -> str:
    return ", ".join(METHODS.names())


def _check_seed_folders(comp_dir: Path, seeds: Sequence[int]) -> None:
    """The records a resumed comparison reads of its seed folders (results, checkpoints) are sound,
    before it writes anything: a damaged one is one line, and the folder stays as it was."""
    from kdlab.train.checkpoint import ArmCheckpoint

    for seed in seeds:
        folder = seed_dir(comp_dir, seed)
        if has_results(folder):
            read_results(folder)
        for ckpt_dir in checkpoint_folders(folder):
            if (ckpt := ArmCheckpoint(ckpt_dir, ckpt_dir.name)).exists():
                ckpt.verify()


def _check_resumable(comp_dir: Path, cfg: ExperimentConfig) -> None:
    if not is_comparison(comp_dir):
        raise KdlabError(f"--resume {comp_dir}: not a comparison folder (no {COMPARISON_FILE}); give one to resume")
    stored = read_config(comp_dir, hint=COMPARISON_DAMAGED).model_dump(mode="json")
    current = cfg.model_dump(mode="json")
    for who in ("teacher", "student"):
        # config.resolved.yaml holds each model's resolved view (from the model or the data); a key
        # the experiment leaves empty resolves the same way again, so only set keys are compared.
        for key, value in current[who]["input"].items():
            if value is None:
                stored[who]["input"][key] = None
    diff = _first_difference(stored, current, ignore={"seed", "out"})
    if diff is not None:
        raise KdlabError(
            f"--resume {comp_dir}: the experiment differs from the one this comparison was started with "
            f"at '{diff}'; resume with the same experiment and --set options, or start a new comparison"
        )


def _first_difference(a: Any, b: Any, *, ignore: set[str], prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if not prefix and key in ignore:
                continue
            found = _first_difference(a.get(key), b.get(key), ignore=ignore, prefix=f"{prefix}{key}.")
            if found is not None:
                return found
        return None
    return None if a == b else prefix.rstrip(".")


def write_comparison(
    comp_dir: Path, cfg: ExperimentConfig, methods: dict[str, Any], seeds: Sequence[int], *, status: str
) -> dict[str, Any]:
    """Aggregate the seed folders into ``comparison.json`` and ``comparison.csv`` (atomically);
    ``verdicts`` holds :func:`kdlab.report.verdict.arm_verdict` of every distilled arm."""
    per_seed: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        if has_results(folder := seed_dir(comp_dir, seed)):
            per_seed[seed] = read_results(folder)
    arm_names = [*BASE_ARMS, *methods]
    first = next(iter(per_seed.values()), {})
    comparison: dict[str, Any] = {
        "schema_version": 1,
        "kind": "comparison",
        "kdlab_version": __version__,
        "name": cfg.name,
        "status": status,
        "metric": METRIC,
        "confidence": stats.CONFIDENCE,
        "selection": cfg.train.select,
        "seeds": list(seeds),
        "methods": methods,
        "data": first.get("data"),
        "arms": summarize_arms(per_seed, arm_names),
        "seed_folders": {str(s): seed_dir(comp_dir, s).name for s in per_seed},
    }
    comparison["verdicts"] = verdicts(comparison)  # one per distilled arm (kdlab.report.verdict)
    rows = (
        {"arm": arm, "seed": seed, **res["arms"][arm]}
        for seed, res in per_seed.items()
        for arm in arm_names
        if arm in res.get("arms", {})
    )
    write_comparison_files(comp_dir, comparison, CSV_COLUMNS, rows)
    return comparison


def read_comparison(comp_dir: Path) -> dict[str, Any]:
    """Read a comparison folder's ``comparison.json`` (one-line errors for a wrong path):
    :func:`kdlab.runs.read_comparison`."""
    return _read_comparison(Path(comp_dir))


def refuse_comparison_folder(
    folder: Path, command: str, args: Sequence[str] = (), *, arm: str | None = None, after: Sequence[str] = ()
) -> None:
    """Raise a one-line :class:`KdlabError` when ``folder`` is a comparison folder, which holds one
    run per seed (``seed-<s>/``) and no model of its own: the line names the seed folders and the
    exact ``kdlab COMMAND SEED_FOLDER ARGS… --arm ARM`` to run instead. ``arm`` is kept when the
    comparison has it, else the first compared method is suggested. Any other folder passes."""
    import shlex

    folder = Path(folder)
    if not is_comparison(folder) or has_results(folder):
        return
    try:
        comp = _read_comparison(folder)
        seeds, methods = [int(s) for s in comp.get("seeds", [])], list(comp.get("methods", {}))
    except KdlabError:
        seeds, methods = [], []
    done = [seed_dir(folder, s) for s in seeds if has_results(seed_dir(folder, s))]
    if not done:  # a damaged comparison.json: the seed folders there are
        done = sorted(p for p in folder.glob(f"{seed_dir(folder, 0).name[:-1]}*") if has_results(p))
    names = ", ".join(p.name for p in done) or "none finished yet"
    arms = [*BASE_ARMS, *methods]
    suggest = arm if arm is not None and arm in arms else (methods[0] if methods else "scratch")
    example = done[0] if done else seed_dir(folder, seeds[0] if seeds else 0)
    inputs = shlex.join(args) if args else ("INPUT…" if command == "predict" else "")
    cmd = " ".join(w for w in ("kdlab", command, shlex.quote(str(example)), inputs) if w)
    cmd = " ".join([cmd, shlex.join(["--arm", suggest, *after])])
    raise KdlabError(f"{folder} is a comparison folder (seed runs: {names}): {command} with a seed's run, e.g. {cmd}")
