"""The Distiller: a frozen teacher, a student, and the objective that ties them.

Teacher hygiene is enforced here, not left to the user:

* ``teacher=`` and ``student=`` are keyword-only, and must be different modules sharing no
  parameters (so the two can never be swapped or confused by position);
* the teacher is frozen (``requires_grad=False``), kept in eval mode even when ``.train()`` is
  called on the distiller (dropout off, batch-norm statistics fixed), runs under
  ``torch.inference_mode()``, and its parameters never enter the optimizer;
* teacher and student output shapes are checked on one dry batch before any training step.

Feature methods (``fitnet``, ``at``; :mod:`kdlab.kd.features`) hook named layers of both models
during ``fit`` only; their projectors are built on the dry batch, added to the optimizer (a given
optimizer gets an extra parameter group) and saved with :meth:`Distiller.save_projectors`.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.data.tensors import Batch, Loader, Split, TensorLoader, as_loader, prepare_inputs
from kdlab.errors import ConfigError
from kdlab.io import save_weights
from kdlab.kd.features import FeatureTerm
from kdlab.kd.objective import Objective
from kdlab.models.registry import count_params
from kdlab.train import loop, metrics
from kdlab.train.checkpoint import FitState


class Distiller(nn.Module):
    """Distil ``teacher`` into ``student`` with ``α·CE(y, s) + (1 − α)·D(t, s)``.

    Args:
        teacher: a trained classifier ``x -> logits [N, C]``; frozen by this constructor.
        student: the classifier to train, same output shape.
        alpha: weight of the hard-label loss in [0, 1].
        temperature: softmax temperature T of the KD term, in [0.01, 100].
        t_squared: multiply the KD term by T² (Hinton et al.); False for the classic labs.
        method: registered KD term (``distill.method``): kd, dkd, dist, logit-std, fitnet, at.
        example_input: a batch of inputs for the dry run; without it the check runs on the first
            batch ``fit`` or ``evaluate`` sees.
        **method_options: ``warmup_epochs`` and the method's options (``dkd_alpha``, ``dkd_beta``,
            ``standardize``, ``dist_beta``, ``dist_gamma``, ``feature_pairs``, ``feature_weight``),
            the same names, defaults and bounds as the ``distill.*`` config keys: each method's
            options model (:data:`kdlab.kd.objective.METHODS`, docs/methods.md) validates them.
            ``distiller.objective.settings()`` reports every setting in use.

    Example:
        >>> distiller = Distiller(teacher=big, student=small, alpha=0.1, temperature=4.0)
        >>> history = distiller.fit((x_train, y_train), val=(x_val, y_val), epochs=5)
        >>> distiller.evaluate((x_test, y_test))
        {'loss': 0.31, 'accuracy': 0.91, 'teacher_agreement': 0.94}
    """

    def __init__(
        self,
        *,
        teacher: nn.Module,
        student: nn.Module,
        alpha: float = 0.1,
        temperature: float = 4.0,
        t_squared: bool = True,
        method: str = "kd",
        example_input: Tensor | None = None,
        **method_options: Any,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, nn.Module) or not isinstance(student, nn.Module):
            raise ConfigError(
                f"teacher and student must be torch.nn.Module (got teacher: {type(teacher).__name__}, "
                f"student: {type(student).__name__})"
            )
        if teacher is student:
            raise ConfigError("teacher and student are the same module: pass a separate student network")
        shared = {id(p) for p in teacher.parameters()} & {id(p) for p in student.parameters()}
        if shared:
            raise ConfigError(f"teacher and student share {len(shared)} parameter tensors: they must be separate")
        # Every option is validated once, by the method's options model (a ConfigError naming the key).
        objective = Objective.from_method(
            method, alpha=alpha, temperature=temperature, t_squared=t_squared, **method_options
        )
        t_params, s_params = count_params(teacher), count_params(student)
        if t_params < s_params:
            warnings.warn(
                f"the teacher has fewer parameters ({t_params:,}) than the student ({s_params:,}): "
                "check that teacher= and student= are not swapped",
                stacklevel=2,
            )
        self.teacher = teacher.requires_grad_(False).eval()
        self.student = student
        self.objective = objective
        term = self.objective.kd_term
        # A KD term with parameters (feature projectors) is a submodule: it moves with .to(device).
        self.kd_module = term if isinstance(term, nn.Module) else None
        if isinstance(term, FeatureTerm):
            term.attach(teacher=self.teacher, student=student)
        self._checked = False
        if example_input is not None:
            self.check_compatible(example_input)

    # ------------------------------------------------------------------ teacher hygiene
    def train(self, mode: bool = True) -> Distiller:
        """Set the student's mode; the teacher stays in eval mode whatever ``mode`` is."""
        self.training = mode
        self.student.train(mode)
        if self.kd_module is not None:
            self.kd_module.train(mode)
        self.teacher.eval()
        return self

    def _capturing(self) -> contextlib.AbstractContextManager[None]:
        """Forward hooks of a feature method while active; nothing for logit methods."""
        term = self.kd_module
        return term.capturing() if isinstance(term, FeatureTerm) else contextlib.nullcontext()

    def teacher_logits(self, batch: Batch) -> Tensor:
        """The teacher's logits for a batch, computed without autograd, in eval mode."""
        self.teacher.eval()
        with torch.inference_mode():
            out = self.teacher(batch.x)
        # Inference tensors cannot be saved for backward; a plain copy can (and is cheap).
        return out.clone()

    def check_compatible(self, x: Tensor) -> None:
        """Run teacher and student on one batch and compare their output shapes."""
        was_training = self.student.training
        self.student.eval()
        try:
            with self._capturing():
                try:
                    with torch.no_grad():
                        t_out = self.teacher(x)
                        s_out = self.student(x)
                except Exception as e:
                    raise ConfigError(
                        f"dry run on a batch of shape {tuple(x.shape)} failed: {type(e).__name__}: {e}"
                    ) from None
                if isinstance(self.kd_module, FeatureTerm):
                    self.kd_module.build_projectors()
        finally:
            self.student.train(was_training)
        if not isinstance(t_out, Tensor) or not isinstance(s_out, Tensor):
            raise ConfigError("teacher and student must return a logits tensor [N, C]")
        if t_out.shape != s_out.shape or t_out.dim() != 2:
            raise ConfigError(
                f"teacher and student output shapes are incompatible. Teacher: {tuple(t_out.shape)}, "
                f"Student: {tuple(s_out.shape)} (both must be [batch, classes])"
            )
        self._checked = True

    def forward(self, x: Tensor) -> Tensor:
        """The student's logits (the distilled model is the student)."""
        return self.student(x)

    # ------------------------------------------------------------------ training and evaluation
    def fit(
        self,
        train: Any,
        val: Any = None,
        *,
        epochs: int = 1,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-3,
        batch_size: int = 32,
        seed: int | None = 0,
        device: str | torch.device | None = None,
        select: str = "last",
        progress: loop.Progress | None = None,
        teacher_fn: loop.TeacherFn | None = None,
        on_epoch_end: Any = None,
        verbose: int = 1,
        unlabeled: Any = None,
        **loop_options: Any,
    ) -> loop.History:
        """Train the student by distillation; returns the per-epoch history.

        ``unlabeled`` is a transfer set: inputs ``[M, ...]`` without labels (a tensor or array, with
        ``train`` an ``(X, y)`` pair). Its samples join the training batches (shuffled together with
        the labelled ones) and enter the KD term only; CE is the mean over each batch's labelled
        samples (:class:`~kdlab.kd.objective.Objective`, ``partial_labels``).

        ``train``/``val`` take a DataLoader, re-iterable ``(x, y)`` batches or an ``(X, y)`` pair.
        The default optimizer is Adam(lr) over the student's parameters only; a given optimizer
        must not hold any teacher parameter. ``teacher_fn`` replaces the live teacher forward
        (e.g. a lookup in precomputed logits by sample index); feature methods refuse it. Parameters
        of the KD term (feature projectors) join the optimizer as an extra parameter group unless it
        already holds them. Other keyword options (``state``, ``nonfinite``, ``grad_clip``,
        ``should_stop``) go to :func:`kdlab.train.loop.fit`. Without ``progress``, ``verbose=1`` shows
        a progress bar per epoch in a terminal or notebook (one line per epoch elsewhere), ``2`` one
        line per epoch, ``0`` nothing, as in :func:`kdlab.train.loop.fit`.
        """
        options = dict(loop_options)
        unknown = sorted(set(options) - _LOOP_OPTIONS)
        if unknown:
            raise TypeError(f"Distiller.fit() got unexpected keyword argument(s): {', '.join(unknown)}")
        progress = loop.progress_for(progress, verbose)
        if unlabeled is not None:
            train = _with_unlabeled(train, unlabeled)
        self.objective.partial_labels = unlabeled is not None
        loader, val_loader = loop.user_loaders(
            self.student,  # the teacher follows in run_epochs
            train,
            val,
            batch_size=batch_size,
            eval_batch_size=int(options.pop("eval_batch_size", 512)),
            seed=seed,
            device=device,
        )
        if optimizer is None:
            optimizer = loop.make_optimizer([p for p in self.student.parameters() if p.requires_grad], lr=lr)
        steps = loop.StepOptions(**{k: options.pop(k) for k in _STEP_OPTIONS if k in options})
        return self.run_epochs(
            loader,
            val_loader,
            optimizer=optimizer,
            epochs=epochs,
            seed=seed,
            teacher_fn=teacher_fn,
            select=select,
            steps=steps,
            progress=progress,
            on_epoch_end=on_epoch_end,
            **options,
        )

    def run_epochs(
        self,
        train_loader: Loader,
        val_loader: Loader | None,
        *,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        seed: int | None = None,
        teacher_fn: loop.TeacherFn | None = None,
        select: str = "last",
        state: FitState | None = None,
        steps: loop.StepOptions = loop.StepOptions(),
        compile: bool = False,
        progress: loop.Progress | None = None,
        on_epoch_end: Any = None,
    ) -> loop.History:
        """Distil on loaders already built (the lab's, or :meth:`fit`'s from user data): checks the
        pair once on a dry batch, adds the KD term's parameters to ``optimizer`` and runs
        :func:`kdlab.train.loop.run_epochs` with this objective and the teacher (``teacher_fn``, e.g.
        a cache lookup by sample index, or the live frozen teacher)."""
        if teacher_fn is not None and self.objective.needs_teacher_features:
            raise ConfigError(
                f"method '{self.objective.name}' needs the teacher's live features: precomputed teacher "
                "logits (teacher_fn / a teacher cache) cannot be used with it"
            )
        self.to(loop._model_device(self.student))  # the teacher and the KD term join the student's device
        self._check_optimizer(optimizer)
        with self._capturing():
            if not self._checked:
                self.check_compatible(_dry_inputs(train_loader))
            self._add_kd_params(optimizer)
            self.train()
            return loop.run_epochs(
                self.student,
                train_loader,
                val_loader,
                optimizer=optimizer,
                epochs=epochs,
                seed=seed,
                objective=self.objective,
                teacher=teacher_fn or self.teacher_logits,
                select=select,
                state=state,
                steps=steps,
                compile=compile,
                progress=progress,
                on_epoch_end=on_epoch_end,
            )

    def evaluate(self, data: Any, *, batch_size: int = 512) -> dict[str, float]:
        """Student loss (CE) and accuracy on ``data``, and its top-1 agreement with the teacher."""
        dev = loop._model_device(self.student)
        self.to(dev)
        loader = as_loader(data, batch_size=batch_size, device=dev)
        s_logits, y = loop.predict(self.student, loader)
        t_logits, _ = loop.predict(self.teacher, loader)
        self.teacher.eval()
        from kdlab.kd import losses

        return {
            "loss": float(losses.cross_entropy(s_logits, y)),
            "accuracy": metrics.accuracy(s_logits, y),
            "teacher_agreement": metrics.teacher_agreement(s_logits, t_logits),
        }

    def kd_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the KD term (feature projectors); empty for logit methods."""
        return [] if self.kd_module is None else [p for p in self.kd_module.parameters() if p.requires_grad]

    def trainable_module(self) -> nn.Module:
        """Everything the optimizer trains, as one module for optimizers and checkpoints: the
        student alone, or ``ModuleDict(student=..., kd=<projectors' owner>)`` when the KD term has
        parameters (known after the dry run: pass ``example_input`` or call :meth:`check_compatible`)."""
        if self.kd_module is None or not self.kd_parameters():
            return self.student
        return nn.ModuleDict({"student": self.student, "kd": self.kd_module})

    def _add_kd_params(self, optimizer: torch.optim.Optimizer) -> None:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [p for p in self.kd_parameters() if id(p) not in held]
        if missing:
            optimizer.add_param_group({"params": missing})

    def save_projectors(self, path: str | Path) -> int | None:
        """Write the feature projectors' weights (safetensors, atomic); returns the size in bytes,
        or None when the method has none. Keys are ``<student layer, dots as __>.weight|bias``."""
        term = self.kd_module
        if not isinstance(term, FeatureTerm) or len(term.projectors) == 0:
            return None
        meta = {"kind": term.kind, "pairs": ";".join(f"{s}->{t}" for s, t in term.pairs.items())}
        return save_weights(term.projectors, Path(path), meta)

    def _check_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        teacher_ids = {id(p) for p in self.teacher.parameters()}
        for group in optimizer.param_groups:
            if any(id(p) in teacher_ids for p in group["params"]):
                raise ConfigError("the optimizer holds teacher parameters: optimize the student's only")


_STEP_OPTIONS = ("nonfinite", "grad_clip", "should_stop", "precision")
_LOOP_OPTIONS = frozenset({*_STEP_OPTIONS, "state", "compile", "eval_batch_size"})
"""The keyword options :meth:`Distiller.fit` passes on (as :func:`kdlab.train.loop.fit` takes them)."""


def _with_unlabeled(train: Any, unlabeled: Any) -> tuple[Tensor, Tensor]:
    """``(X, y)`` followed by the transfer set's inputs, labelled :data:`~kdlab.kd.losses.UNLABELED`."""
    from kdlab.kd.losses import UNLABELED

    if isinstance(train, Split):
        train = (train.x, train.y)
    if not (isinstance(train, (tuple, list)) and len(train) == 2):
        raise ConfigError("unlabeled: needs train as an (X, y) pair of tensors or arrays to join it to")
    x, y = (torch.as_tensor(a) for a in train)
    u = torch.as_tensor(unlabeled)
    if u.shape[1:] != x.shape[1:]:
        raise ConfigError(
            f"unlabeled: inputs of shape {tuple(u.shape[1:])} per sample, the labelled ones {tuple(x.shape[1:])}"
        )
    return torch.cat([x, u.to(x.dtype)]), torch.cat([y.long(), torch.full((len(u),), UNLABELED, dtype=torch.long)])


def _dry_inputs(loader: Any) -> Tensor:
    """A few inputs for the dry run, without advancing a TensorLoader's epoch (its data order)."""
    if isinstance(loader, TensorLoader):
        return prepare_inputs(loader.x[:8])
    for batch in loader:
        return batch.x
    raise ConfigError("the training data is empty")
