"""The experiment config: pydantic models with ``extra="forbid"``.

Every field documents its meaning and units; the same text is the reference in ``docs/config.md``.
Precedence: defaults < YAML file (or preset) < ``--set key=value`` overrides.

Every number has a range a real experiment never leaves (``docs/config.md``): sizes and counts are
bounded above so a typo cannot ask for terabytes, and every float must be finite (no ``.inf`` or
``.nan``), so a bad setting is refused, naming its key, before any arm trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Upper bounds (docs/config.md "Bounds"). Seeds: numpy takes seeds < 2**32, and a run also uses
# seed + 1 (the students) up to seed + 7 (subsets), a comparison seed .. seed + K - 1.
MAX_SEED = 2**31 - 1
MAX_EPOCHS = 10_000
MAX_IMAGE_SIZE = 2048
MAX_LEN = 100_000
MAX_VOCAB = 2_000_000
MAX_BATCH = 65_536
MAX_SAMPLES = 1_000_000_000
MAX_NAME = 100  # the run folder is <timestamp>-<name>; file names stop at 255 bytes
MAX_LOSS_WEIGHT = 10_000.0  # 10x the largest weight in use (attention transfer's beta = 1000)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_in_paths(cls, v: object) -> object:
        # A NUL byte (YAML "\0") would make every later file operation fail with a traceback.
        if isinstance(v, Path) and "\x00" in str(v):
            raise ValueError("a path cannot contain a NUL byte")
        return v


class DataConfig(Section):
    name: str = Field("digits", description="dataset: digits | fashion-mnist | image-folder | text-csv | aclimdb")
    path: Path | None = Field(None, description="dataset location (a folder or file); None = the dataset's default")
    image_size: int = Field(
        224, gt=0, le=MAX_IMAGE_SIZE, description="image-folder: images are resized to image_size × image_size px"
    )
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of all samples held out for validation")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="share of all samples held out for testing")
    cache_dir: Path | None = Field(
        None, description="where decoded image arrays are cached; None = $KDLAB_CACHE or ~/.cache/kdlab"
    )
    train_limit: int | None = Field(
        None, gt=0, le=MAX_SAMPLES, description="use at most this many training samples (stratified subset); None = all"
    )
    text_column: str = Field("text", description="text-csv: name of the column (or JSON key) holding the text")
    label_column: str = Field("label", description="text-csv: name of the column (or JSON key) holding the label")
    vocab_size: int = Field(
        20000,
        ge=3,
        le=MAX_VOCAB,
        description="text: embedding rows = the most frequent training words + padding (0) + unknown (1)",
    )
    max_len: int = Field(
        200, ge=1, le=MAX_LEN, description="text: tokens per sequence; longer texts keep their first max_len"
    )
    unlabeled: Literal["rest"] | Path | None = Field(
        None,
        description="transfer set: inputs without labels that only the KD term trains on (CE sees the labelled "
        "samples only): an image folder (no class folders needed), a .txt file (one text per line), a "
        ".csv/.tsv/.jsonl file (its data.text_column), or rest = the training samples data.train_limit "
        "left out, their labels withheld (docs/data.md, Transfer sets)",
    )
    unlabeled_limit: int | None = Field(
        None, gt=0, le=MAX_SAMPLES, description="use at most this many transfer-set samples (seeded); None = all"
    )
    max_memory_gb: float = Field(
        4.0,
        gt=0,
        description="host-memory budget for decoded images (GiB): an image folder whose decoded array is larger "
        "is memory-mapped from its cache file and batches are gathered from the map; a training split larger "
        "than this also stays off the GPU, streamed to it batch by batch (docs/performance.md)",
    )

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1 to leave training data")
        if self.unlabeled == "rest" and self.train_limit is None:
            raise ValueError(
                "unlabeled: rest is the training samples data.train_limit leaves out; set data.train_limit "
                "(e.g. 540 for 1 % of Fashion-MNIST's labels) or give a file or folder of unlabelled inputs"
            )
        if self.unlabeled_limit is not None and self.unlabeled is None:
            raise ValueError("unlabeled_limit: there is no transfer set to limit; set data.unlabeled or remove it")
        return self


MODEL_SPEC_HELP = (
    "a registered name (`kdlab models`), timm:<name>, hf:<folder or hub id>, or the user's own factory "
    "<module>:<function> / <path/to/file.py>:<function> (docs/models.md)"
)


class InputConfig(Section):
    """How one model sees the samples when it differs from the data's own view (``teacher.input``,
    ``student.input``). Every field left empty is taken from the model where it declares it (timm's
    ``pretrained_cfg`` when its weights are timm's or a checkpoint's, an ``hf:`` folder's tokenizer or
    image processor), else from the data; the values used are written to config.resolved.yaml and
    results.json."""

    image_size: int | None = Field(
        None, gt=0, le=MAX_IMAGE_SIZE, description="images: this model sees image_size × image_size px"
    )
    mean: list[float] | None = Field(
        None, min_length=1, max_length=4, description="images: per-channel mean subtracted (on pixels in [0, 1])"
    )
    std: list[float] | None = Field(
        None, min_length=1, max_length=4, description="images: per-channel std divided by (on pixels in [0, 1])"
    )
    channels: int | None = Field(
        None,
        ge=1,
        le=4,
        description="images: channels this model takes (grey data is repeated to 3, RGB averaged to 1)",
    )
    tokenizer: Path | None = Field(
        None, description="text: a Hugging Face tokenizer folder (save_pretrained) encoding this model's inputs"
    )
    max_length: int | None = Field(None, ge=1, le=MAX_LEN, description="text: tokens per sequence for this tokenizer")

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and any(x <= 0 for x in v):
            raise ValueError("every std must be > 0")
        return v

    def is_set(self) -> bool:
        """True when any field is given (the model does not simply take the data's view)."""
        return any(getattr(self, k) is not None for k in type(self).model_fields)


class TeacherConfig(Section):
    model: str = Field("lab-cnn-teacher", min_length=1, description=MODEL_SPEC_HELP)
    epochs: int = Field(8, ge=0, le=MAX_EPOCHS, description="training epochs; 0 only with weights to start from")
    checkpoint: Path | None = Field(
        None,
        description="load the teacher's weights instead of training it: .safetensors, a weights-only .pt/.pth "
        "state dict (also under state_dict / model, DDP's module. prefix stripped), or an hf: model's folder",
    )
    pretrained: bool = Field(
        False, description="timm: / hf: hub id: download the model's pretrained weights (needs a network)"
    )
    train_on: Literal["budget", "all"] = Field(
        "budget",
        description="the labelled samples the teacher trains on: budget = the students' (data.train_limit), "
        "all = every training sample before data.train_limit (the students still see only the budget)",
    )
    input: InputConfig = Field(default_factory=InputConfig, description="how the teacher sees the samples")


class StudentConfig(Section):
    model: str = Field("lab-cnn-student", min_length=1, description=MODEL_SPEC_HELP + "; used by both student arms")
    epochs: int = Field(
        5, ge=1, le=MAX_EPOCHS, description="training epochs of the scratch and of the distilled student"
    )
    checkpoint: Path | None = Field(
        None, description="start both student arms from these weights (formats as teacher.checkpoint)"
    )
    pretrained: bool = Field(False, description="as teacher.pretrained, for the student")
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="hf: overrides of the model's config (e.g. {num_hidden_layers: 2}): a smaller model of "
        "its family, freshly initialised",
    )
    init_from_teacher: bool = Field(
        False,
        description="hf: copy the teacher's embeddings and evenly spaced layers into the student (docs/models.md)",
    )
    input: InputConfig = Field(default_factory=InputConfig, description="how the student sees the samples")


TEACHER_CACHE_KEYS = ("teacher_cache", "teacher_cache_dtype", "teacher_cache_dir")
"""``distill.*`` keys of the loop (how teacher logits are obtained), not of the objective."""
LOOP_KEYS = (*TEACHER_CACHE_KEYS, "use_unlabeled")
"""``distill.*`` keys of the loop (which samples and teacher logits it trains on), not of the objective."""


class DistillConfig(Section):
    """The ``distill`` section: the public names, bounds and descriptions of every distillation
    setting. The methods' options models (:mod:`kdlab.kd.objective`) take their fields from here,
    so a value is validated by the same rule on every path."""

    method: str = Field("kd", description="KD term D: kd | dkd | dist | logit-std | fitnet | at (docs/methods.md)")
    alpha: float = Field(0.1, ge=0, le=1, description="weight of the label loss: α·CE + (1−α)·D")
    temperature: float = Field(
        4.0, ge=0.01, le=100, description="softmax temperature T of the KD term (τ for dist), in [0.01, 100]"
    )
    t_squared: bool = Field(True, description="multiply the KD term by T² (Hinton); the classic labs do not")
    standardize: bool = Field(
        False,
        description="kd, dkd: z-score each logit vector before the softmax (Sun et al. 2024); logit-std = kd + this",
    )
    dkd_alpha: float = Field(
        1.0, ge=0, le=MAX_LOSS_WEIGHT, description="dkd: weight of target-class KD (TCKD) inside D, not distill.alpha"
    )
    dkd_beta: float = Field(
        8.0, ge=0, le=MAX_LOSS_WEIGHT, description="dkd: weight of non-target-class KD (NCKD) inside D"
    )
    warmup_epochs: int = Field(
        0,
        ge=0,
        le=MAX_EPOCHS,
        description="scale D by min(epoch / warmup_epochs, 1), epochs counted from 1; 0 = off (DKD: 20)",
    )
    dist_beta: float = Field(
        1.0, ge=0, le=MAX_LOSS_WEIGHT, description="dist: weight β of the inter-class (per-sample) relation"
    )
    dist_gamma: float = Field(
        1.0, ge=0, le=MAX_LOSS_WEIGHT, description="dist: weight γ of the intra-class (per-class) relation"
    )
    feature_pairs: dict[str, str] = Field(
        default_factory=dict,
        description="fitnet, at: student module name -> teacher module name, as in model.named_modules()",
    )
    feature_weight: float | None = Field(
        None,
        ge=0,
        le=MAX_LOSS_WEIGHT,
        description="fitnet, at: weight of the summed feature loss; None = fitnet 1, at β = 1000",
    )

    teacher_cache: Literal["auto", "on", "off"] = Field(
        "auto",
        description="compute the teacher's logits once and look them up by sample index: auto = on when valid "
        "(no random augmentation, no live teacher features), on = required, off = live teacher every step",
    )
    teacher_cache_dtype: Literal["float32", "float16"] = Field(
        "float32", description="storage dtype of cached teacher logits (float16 halves memory, rounds logits)"
    )
    teacher_cache_dir: Path | None = Field(
        None, description="shared folder of teacher-logit caches; None = $KDLAB_CACHE/teacher-logits"
    )
    use_unlabeled: bool = Field(
        True,
        description="train the KD term on the transfer set (data.unlabeled) too; false = this arm sees the "
        "labelled samples only (kdlab compare -m kd,kd:use_unlabeled=false pairs the two)",
    )

    def method_options(self) -> dict[str, Any]:
        """The method-specific options and ``warmup_epochs``, as keyword arguments of
        :class:`~kdlab.train.distiller.Distiller` (which takes method, alpha, temperature and
        t_squared by name). Which of them a method takes, and refuses, is its options model's
        business (:data:`kdlab.kd.objective.METHODS`)."""
        return self.model_dump(exclude={"method", "alpha", "temperature", "t_squared", *LOOP_KEYS})

    @field_validator("teacher_cache", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: object) -> object:
        # YAML 1.1 reads a bare on/off as a boolean.
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class AugmentConfig(Section):
    hflip: bool = Field(False, description="random horizontal flip of each training image (p = 0.5)")
    crop_padding: int = Field(
        0,
        ge=0,
        le=256,
        description="random crop after zero-padding by this many px per side (random translate); 0 = off",
    )

    @property
    def random(self) -> bool:
        """True when augmentation changes what the models see from one epoch to the next."""
        return self.hflip or self.crop_padding > 0


class TrainConfig(Section):
    batch_size: int = Field(32, ge=1, le=MAX_BATCH, description="samples per optimizer step")
    lr: float = Field(1e-3, gt=0, le=10, description="learning rate (Adam's default 1e-3, as in the labs)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="adam | adamw | sgd (momentum 0.9)")
    weight_decay: float = Field(0.0, ge=0, le=10, description="L2 / decoupled weight decay")
    select: Literal["last", "best-val"] = Field(
        "best-val",
        description="weights reported per arm: the last epoch's, or the epoch with the best validation accuracy",
    )
    eval_batch_size: int = Field(512, ge=1, le=MAX_BATCH, description="batch size for evaluation (no gradients)")
    nonfinite: Literal["stop", "skip-batch"] = Field(
        "stop", description="a NaN/inf loss: stop the arm (last good checkpoint kept) or skip that batch's update"
    )
    grad_clip: float | None = Field(
        None, gt=0, description="clip the gradients' global L2 norm to this value before each step; None = off"
    )
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig, description="training-set augmentation, batch tensor ops on the device"
    )
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="forward-pass precision: auto = bfloat16 autocast on CUDA, float32 elsewhere"
    )
    compile: bool = Field(False, description="torch.compile the trained model (CUDA mostly; first epoch slower)")
    host_allocator: Literal["auto", "system"] = Field(
        "auto",
        description="auto = on CPU runs, glibc keeps freed memory for the next step instead of page-faulting it "
        "back in (up to 2x faster on large images); system = leave the C allocator alone",
    )
    log: list[Literal["tensorboard"]] = Field(
        default_factory=list,
        description="where per-epoch metrics also go: [tensorboard] = event files in RUN_DIR/tensorboard/<arm>/ "
        "(needs pip install kdlab[tensorboard])",
    )


class ExperimentConfig(Section):
    name: str = Field(
        "experiment",
        min_length=1,
        max_length=MAX_NAME,
        description="run name; the run folder is runs/<timestamp>-<name> (letters, digits, _ . - kept, others -)",
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="fixes splits, initialization, data order and dropout; 0 .. 2**31 - 1"
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto = cuda, then mps, then cpu")
    deterministic: bool = Field(
        False, description="torch.use_deterministic_algorithms(True): repeatable on GPUs too, slower there"
    )
    out: Path = Field(Path("runs"), description="parent folder of run folders")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _teacher_source(self) -> ExperimentConfig:
        t = self.teacher
        has_weights = t.checkpoint is not None or t.pretrained or t.model.startswith("hf:")
        if t.epochs == 0 and not has_weights:
            raise ValueError(
                "teacher.epochs is 0 and the teacher has no weights to start from: set teacher.checkpoint "
                "(or teacher.pretrained, or an hf: folder) or teacher.epochs > 0"
            )
        if self.student.init_from_teacher and not (t.model.startswith("hf:") and self.student.model.startswith("hf:")):
            raise ValueError("student.init_from_teacher: needs hf: models for both teacher.model and student.model")
        if t.train_on == "all" and self.data.train_limit is None:
            raise ValueError(
                "teacher.train_on: all means the labelled samples before data.train_limit, but no data.train_limit "
                "is set (the teacher already sees every one); set data.train_limit or remove teacher.train_on"
            )
        if t.train_on == "all" and t.checkpoint is not None:
            raise ValueError("teacher.train_on: the teacher is loaded from teacher.checkpoint, not trained; remove one")
        if self.student.init_from_teacher and self.student.checkpoint is not None:
            raise ValueError(
                "student.init_from_teacher and student.checkpoint both set the students' start: choose one"
            )
        return self
