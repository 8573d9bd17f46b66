"""The records of a run folder, read back safely: what each file may hold, and one reader for all.

A run folder is data that outlives the process that wrote it: it may be truncated, hand-edited,
copied from elsewhere or simply wrong. Every reader (``kdlab show``, ``report``, ``predict``,
``export``, :func:`kdlab.load_run`, ``run --resume``, ``compare --resume``) reads a record
through this module:

- :func:`read_record_bytes` refuses a file larger than :data:`MAX_RECORD_BYTES` without reading it
  (and never reads more than that, whatever the file claims);
- :func:`read_json_record` parses JSON nested at most :data:`MAX_DEPTH` levels (Python's parser
  would otherwise recurse until a ``RecursionError``) and puts back the NaN/±inf that
  :func:`kdlab.io.strict_json` wrote as ``null``;
- :func:`check_record` validates the parsed value with a schema below (pydantic, strict: a string
  is never taken for a number) and :func:`read_run_config` re-validates ``config.resolved.yaml``
  with the experiment config's own model.

Any problem is one line naming the file and the field, e.g.
``runs/x/results.json: arms.teacher.test_accuracy: Input should be a valid number (got 'abc'); the
run folder is damaged — re-run it``. Bounds that mirror a config key (``max_len``, the image size,
the vocabulary size, epochs) are that key's own bounds in :mod:`kdlab.config.schema`.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import annotated_types
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from kdlab.config.schema import DataConfig, DistillConfig, ExperimentConfig, StudentConfig
from kdlab.errors import ConfigError, KdlabError, validation_problem

MAX_RECORD_BYTES = 64 * 2**20
"""Largest JSON record (results.json, comparison.json, env.json, vocab.json, a checkpoint's JSON,
history.csv) read: a 1,000-class run's results.json is under 1 MiB."""
MAX_DEPTH = 32
"""Deepest nesting of a JSON record (results.json uses 5 levels)."""
MAX_CLASSES = 100_000
MAX_ARMS = 1_000
MAX_SEEDS = 10_000
MAX_COUNT = 2**53  # sample counts, parameters, bytes: exact in a float, far above any real run
MAX_NAME = 200  # arm, model and class names
MAX_TEXT = 10_000  # free text: notes, paths, versions
DAMAGED = "the run folder is damaged — re-run it"
COMPARISON_DAMAGED = "the comparison folder is damaged — restore the file or start a new comparison"

M = TypeVar("M", bound=BaseModel)


def _upper(model: type[BaseModel], name: str, default: int) -> int:
    """The upper bound (``le``/``lt``) a config field declares, so a record never has a second number."""
    for item in model.model_fields[name].metadata:
        if isinstance(item, annotated_types.Le) and isinstance(item.le, int):
            return item.le
        if isinstance(item, annotated_types.Lt) and isinstance(item.lt, int):
            return item.lt - 1
    return default


MAX_LEN = _upper(DataConfig, "max_len", 100_000)
MAX_IMAGE_SIDE = _upper(DataConfig, "image_size", 2048)
MAX_VOCAB = _upper(DataConfig, "vocab_size", 2_000_000)
MAX_EPOCHS = _upper(StudentConfig, "epochs", 10_000)
MAX_CHANNELS = 4
MAX_SEED = 2**32 - 1  # numpy's limit; a comparison's seeds run past the config's first seed


# --------------------------------------------------------------------------------------------
# Reading


def _fail(error: type[KdlabError], path: Path, problem: str, hint: str) -> KdlabError:
    return error(f"{path}: {problem}; {hint}")


def read_record_bytes(
    path: Path,
    *,
    limit: int = MAX_RECORD_BYTES,
    error: type[KdlabError] = KdlabError,
    hint: str = DAMAGED,
    kind: str = "a kdlab record",
) -> bytes:
    """The bytes of ``path``; a file over ``limit`` bytes (``kind`` names what it should be) is
    refused before it is read."""
    from kdlab.reading import FileTooLarge, NotRegularFile, read_bounded

    path = Path(path)
    try:
        return read_bounded(path, limit)
    except FileTooLarge as e:
        shown = (
            f"is {_mib(e.size)}; {kind} is at most {_mib(limit)}"
            if e.size is not None
            else (f"is larger than {_mib(limit)}; {kind} is at most that")
        )
        raise _fail(error, path, shown, hint) from None
    except FileNotFoundError:
        raise _fail(error, path, "no such file", hint) from None
    except (IsADirectoryError, NotRegularFile) as e:
        what = "is a folder, not a file" if e.errno == errno.EISDIR else f"{e.strerror}"
        raise _fail(error, path, what, hint) from None
    except OSError as e:
        raise _fail(error, path, f"unreadable ({e.strerror or e})", hint) from None


def _mib(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n:,} bytes"


def parse_json_record(data: bytes, path: Path, *, error: type[KdlabError] = KdlabError, hint: str = DAMAGED) -> Any:
    """Parse a JSON record's bytes: UTF-8, at most :data:`MAX_DEPTH` levels deep, NaN/±inf restored."""
    import json

    from kdlab.io import restore_nonfinite

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail(
            error, path, f"unreadable (not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start})", hint
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _fail(
            error, path, f"unreadable (not valid JSON: {e.msg} at line {e.lineno} column {e.colno})", hint
        ) from None
    except RecursionError:
        raise _fail(error, path, f"unreadable (JSON nested deeper than {MAX_DEPTH} levels)", hint) from None
    except ValueError as e:
        why = "an integer of thousands of digits" if "digits" in str(e) else str(e)[:120]
        raise _fail(error, path, f"unreadable ({why})", hint) from None
    if _deeper_than(obj, MAX_DEPTH):
        raise _fail(error, path, f"unreadable (JSON nested deeper than {MAX_DEPTH} levels)", hint)
    return restore_nonfinite(obj)


def read_json_record(
    path: Path, *, error: type[KdlabError] = KdlabError, hint: str = DAMAGED, limit: int = MAX_RECORD_BYTES
) -> Any:
    """Read and parse a JSON record with the bounds of :func:`read_record_bytes` and :func:`parse_json_record`."""
    path = Path(path)
    return parse_json_record(read_record_bytes(path, limit=limit, error=error, hint=hint), path, error=error, hint=hint)


def _deeper_than(obj: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def record_problem(e: ValidationError) -> str:
    """The first problem of a record's ValidationError as ``field.path: message (got value)``."""
    return validation_problem(e)


def check_record(
    schema: type[M],
    obj: Any,
    path: Path,
    *,
    error: type[KdlabError] = KdlabError,
    hint: str = DAMAGED,
    what: str = "",
    at: str = "",
) -> M:
    """``obj`` validated by ``schema``; a problem is one line naming ``path``, ``at`` (a row, say)
    and the field."""
    if not isinstance(obj, dict):
        kind = {list: "a list", str: "a string", type(None): "null"}.get(type(obj), f"a {type(obj).__name__}")
        raise _fail(error, path, f"{at}not {what or 'a kdlab record'} (a JSON object expected, got {kind})", hint)
    try:
        return schema.model_validate(obj)
    except ValidationError as e:
        raise _fail(error, path, at + record_problem(e), hint) from None


def read_run_config(path: Path, *, hint: str = DAMAGED) -> ExperimentConfig:
    """``config.resolved.yaml`` read (bounded, as any experiment file) and validated again."""
    from kdlab.config.load import MAX_FILE_BYTES, parse_yaml, validate

    path = Path(path)
    data = read_record_bytes(path, limit=MAX_FILE_BYTES, error=ConfigError, hint=hint)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(ConfigError, path, "unreadable (not UTF-8 text)", hint) from None
    try:
        raw = parse_yaml(text, str(path))
    except ConfigError as e:
        raise ConfigError(f"{e}; {hint}") from None
    if not isinstance(raw, dict):
        raise _fail(ConfigError, path, f"not a mapping of config keys (got a {type(raw).__name__})", hint)
    try:
        return validate(raw, str(path))
    except ConfigError as e:
        raise ConfigError(f"{e}; {hint}") from None


# --------------------------------------------------------------------------------------------
# Field types

Fraction = Annotated[float, Field(ge=0, le=1)]  # finite: every record refuses NaN unless a field allows it
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
NonNegative = Annotated[float, Field(ge=0)]
Seconds = NonNegative
Loss = Annotated[float, Field(allow_inf_nan=True)]  # a loss may be NaN or inf and still be on record
Epoch = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str, Field(max_length=MAX_TEXT)]
UInt32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
Scalar = StrictInt | StrictFloat | bool | Text | None
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Record(BaseModel):
    """A run-folder record: strict types (``"0.5"`` is not a number), finite floats, and any key
    it does not know kept (a newer kdlab may add some) but bounded by the reader's depth limit."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, populate_by_name=True)


def _scalars(extra: dict[str, Any] | None, where: str) -> None:
    for key, value in (extra or {}).items():
        if isinstance(value, float) or value is None or (isinstance(value, int | str) and len(str(value)) <= MAX_TEXT):
            continue
        raise ValueError(f"{where}{key}: must be a number, a string, true/false or null (got a {type(value).__name__})")


# --------------------------------------------------------------------------------------------
# results.json


class DataRecord(Record):
    """``results.json`` ``data``: the dataset as loaded (see ``docs/run-folder.md``)."""

    name: Name
    train: Count
    val: Count
    test: Count
    classes: list[Text] = Field(min_length=2, max_length=MAX_CLASSES)
    input_shape: list[StrictInt]
    source: Text | None = None
    skipped_files: list[Text] = Field(default_factory=list, max_length=MAX_COUNT)
    skipped_count: Count = 0

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) == 1:
            if not 1 <= v[0] <= MAX_LEN:
                raise ValueError(f"a text input of {v[0]} tokens; data.max_len is 1 .. {MAX_LEN:,}")
        elif len(v) == 3:
            c, h, w = v
            if not (1 <= c <= MAX_CHANNELS and 1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE):
                raise ValueError(
                    f"not an image shape: [channels, height, width] with 1 .. {MAX_CHANNELS} channels "
                    f"and sides of 1 .. {MAX_IMAGE_SIDE} px (data.image_size)"
                )
        else:
            raise ValueError("must be [max_len] (text) or [channels, height, width] (images)")
        return v


class ArmRecord(Record):
    """One arm of ``results.json`` ``arms``."""

    model: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]  # a model spec: a factory file's absolute path
    test_accuracy: Fraction
    test_loss: Loss
    params: Count
    size_bytes: Count
    train_seconds: Seconds
    weights: Name
    ms_per_step: Seconds | None = None
    epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 0
    selected_epoch: Epoch | None = None
    source: Text | None = None
    projectors: Name | None = None
    teacher_agreement: Fraction | None = None
    kl_to_teacher: Loss | None = None
    ece: Fraction | Loss | None = None  # NaN when the model gave non-finite logits (train.nonfinite=skip-batch)
    confusion_matrix: list[list[Count]] | None = Field(None, max_length=MAX_CLASSES)
    latency_ms_per_sample: Seconds | None = None
    latency_ms_per_batch32: Seconds | None = None


class ComparisonNote(Record):
    distilled_minus_scratch_points: Annotated[float, Field(ge=-100, le=100)]
    teacher_minus_distilled_points: Annotated[float, Field(ge=-100, le=100)]
    note: Text | None = None


class ResultsRecord(Record):
    """``results.json`` (schema_version 1, ``docs/run-folder.md``)."""

    schema_version: Annotated[int, Field(ge=1, le=1)] = 1
    kdlab_version: Text | None = None
    run_id: Text | None = None
    name: Text | None = None
    status: Literal["running", "complete", "interrupted", "failed"] = "running"
    seed: Seed = 0
    device: Text | None = None
    data: DataRecord
    distill: dict[str, Any] | None = None
    performance: dict[str, Any] | None = None
    arms: dict[Name, ArmRecord] = Field(max_length=MAX_ARMS)
    methods: dict[Name, dict[str, Any]] | None = Field(None, max_length=MAX_ARMS)
    inputs: dict[Literal["teacher", "student"], dict[str, Any]] | None = None
    comparison: ComparisonNote | None = None
    interrupted: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _confusion(self) -> ResultsRecord:
        k = len(self.data.classes)
        for arm, entry in self.arms.items():
            m = entry.confusion_matrix
            if m is not None and (len(m) != k or any(len(row) != k for row in m)):
                raise ValueError(f"arms.{arm}.confusion_matrix: must be {k} x {k} (one row and column per class)")
        return self


class HistoryRow(Record):
    """A row of ``history.csv`` (``arm`` set) or of a checkpoint's ``history`` (no ``arm``)."""

    arm: Name | None = None
    epoch: Epoch
    train_loss: Loss | None = None
    train_accuracy: Fraction
    steps: Count = 0
    samples: Count = 0
    seconds: Seconds = 0.0
    samples_per_s: Loss | None = None
    val_loss: Loss | None = None
    val_accuracy: Fraction | None = None
    skipped_batches: Count | None = None

    @model_validator(mode="after")
    def _extra_numbers(self) -> HistoryRow:
        for key, value in (self.model_extra or {}).items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ValueError(f"{key}: must be a number (got {str(value)[:40]!r})")
        return self


# --------------------------------------------------------------------------------------------
# comparison.json


class Summary(Record):
    """:func:`kdlab.report.stats.summarize` of a metric over seeds."""

    n: Count = 0
    mean: Loss | None = None
    std: Loss | None = None
    ci95_low: Loss | None = None
    ci95_high: Loss | None = None
    values: list[Loss] = Field(default_factory=list, max_length=MAX_SEEDS)
    note: Text | None = None


class DiffSummary(Summary):
    p_value: Fraction | None = None
    test: Text | None = None
    seeds: list[Seed] = Field(default_factory=list, max_length=MAX_SEEDS)


class ArmSummary(Summary):
    mean: Fraction | None = None
    seeds: list[Seed] = Field(default_factory=list, max_length=MAX_SEEDS)
    model: Name | None = None
    metrics: dict[Name, Summary] = Field(default_factory=dict)
    diff_vs_scratch: DiffSummary | None = None


class ComparisonRecord(Record):
    """``comparison.json`` (``docs/compare.md``)."""

    schema_version: Annotated[int, Field(ge=1, le=1)] = 1
    kind: Literal["comparison"]
    kdlab_version: Text | None = None
    name: Text | None = None
    status: Literal["running", "complete", "interrupted", "failed"] = "running"
    metric: Text | None = None
    seeds: list[Seed] = Field(max_length=MAX_SEEDS)
    methods: dict[Name, DistillConfig] = Field(max_length=MAX_ARMS)
    data: DataRecord | None = None
    arms: dict[Name, ArmSummary] = Field(max_length=MAX_ARMS)
    seed_folders: dict[Text, Text] = Field(default_factory=dict)

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("a seed is listed twice")
        return v


# --------------------------------------------------------------------------------------------
# env.json, vocab.json


class ResumeEntry(Record):
    started: Text
    argv: list[Text] = Field(max_length=10_000)


class EnvRecord(Record):
    """``env.json``: the keys kdlab itself reads back are typed; the rest is kept as written."""

    kdlab_version: Text | None = None
    seed: Seed | None = None
    argv: list[Text] | None = Field(None, max_length=10_000)
    resumes: list[ResumeEntry] = Field(default_factory=list, max_length=100_000)


class VocabRecord(Record):
    """``vocab.json`` (``docs/text.md``); ``max_len`` and the size have ``data.max_len``'s and
    ``data.vocab_size``'s bounds."""

    format: Literal[1] = 1
    pad: Literal[0] = 0
    oov: Literal[1] = 1
    max_len: Annotated[int, Field(ge=1, le=MAX_LEN)]
    tokens: list[Annotated[str, Field(max_length=1_000)]] = Field(min_length=2, max_length=MAX_VOCAB)

    @field_validator("tokens")
    @classmethod
    def _reserved(cls, v: list[str]) -> list[str]:
        if v[:2] != ["<pad>", "<oov>"]:
            raise ValueError(f"must start with '<pad>', '<oov>' (got {v[:2]})")
        return v


# --------------------------------------------------------------------------------------------
# Training checkpoints (checkpoints/<arm>/)

CHECKPOINT_FORMAT = 2
"""2: ``latest.json`` holds ``meta_sha256``, the sha256 of the epoch's JSON file. 1 (without it) is
still read, checked by its schema only."""

_STEM = re.compile(r"^epoch-(\d{4,9})\.(safetensors|json)$")


class CheckpointPointer(Record):
    """``latest.json``: which pair of files is the current checkpoint."""

    format: Annotated[int, Field(ge=1, le=CHECKPOINT_FORMAT)]
    epoch: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    tensors: Name
    meta: Name
    meta_sha256: Sha256 | None = None

    @model_validator(mode="after")
    def _pair(self) -> CheckpointPointer:
        for key, suffix in (("tensors", "safetensors"), ("meta", "json")):
            name = getattr(self, key)
            found = _STEM.match(name)
            if found is None or found.group(2) != suffix or int(found.group(1)) != self.epoch:
                raise ValueError(f"{key}: must name epoch-{self.epoch:04d}.{suffix} in this folder (got {name[:60]!r})")
        if self.format >= 2 and self.meta_sha256 is None:
            raise ValueError("meta_sha256: Field required")
        return self


class ParamGroup(Record):
    """One optimizer parameter group: its hyperparameters and parameter indices."""

    params: list[Annotated[int, Field(ge=0, le=MAX_COUNT)]] = Field(max_length=1_000_000)
    lr: Annotated[float, Field(ge=0)]
    betas: list[Fraction] | None = Field(None, min_length=2, max_length=2)
    eps: NonNegative | None = None
    weight_decay: NonNegative | None = None
    momentum: NonNegative | None = None
    dampening: NonNegative | None = None

    @model_validator(mode="after")
    def _scalar_extras(self) -> ParamGroup:
        _scalars(self.model_extra, "")
        return self


class OptimizerRecord(Record):
    class_name: Name = Field(alias="class")
    param_groups: list[ParamGroup] = Field(min_length=1, max_length=1_000)
    scalars: dict[Annotated[str, Field(pattern=r"^\d{1,9}$")], dict[Name, Scalar]] = Field(default_factory=dict)


class RngRecord(Record):
    """numpy's and Python's generator states (torch's are tensors in the safetensors file)."""

    cuda_count: Annotated[int, Field(ge=0, le=1_024)]
    numpy: tuple[
        Literal["MT19937"],
        Annotated[list[UInt32], Field(min_length=624, max_length=624)],
        Annotated[StrictInt, Field(ge=0, le=624)],
        Annotated[StrictInt, Field(ge=0, le=1)],
        StrictFloat,
    ] = Field(strict=False)
    python: tuple[StrictInt, Annotated[list[UInt32], Field(min_length=625, max_length=625)], StrictFloat | None] = (
        Field(strict=False)
    )

    @field_validator("python")
    @classmethod
    def _position(cls, v: tuple[int, list[int], float | None]) -> tuple[int, list[int], float | None]:
        if v[1][-1] > 624:
            raise ValueError(f"the Mersenne Twister position must be 0 .. 624 (got {v[1][-1]})")
        return v


class CheckpointMeta(Record):
    """``epoch-NNNN.json``: everything of an arm's training state that is not a tensor."""

    format: Annotated[int, Field(ge=1, le=CHECKPOINT_FORMAT)]
    epoch: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]
    history: list[HistoryRow] = Field(max_length=MAX_EPOCHS)
    best_epoch: Epoch | None = None
    best_accuracy: Fraction | None = None
    optimizer: OptimizerRecord
    rng: RngRecord
    teacher_cache: Text | None = None
    arm: Name
    kdlab_version: Text | None = None
    tensors_sha256: Sha256

    @model_validator(mode="after")
    def _consistent(self) -> CheckpointMeta:
        if len(self.history) != self.epoch:
            raise ValueError(f"history: {len(self.history)} rows for {self.epoch} complete epochs")
        if (self.best_epoch is None) != (self.best_accuracy is None):
            raise ValueError("best_epoch and best_accuracy: both set or both null")
        if self.best_epoch is not None and self.best_epoch > self.epoch:
            raise ValueError(f"best_epoch: {self.best_epoch} is after the last complete epoch {self.epoch}")
        return self
