"""Feature distillation (``fitnet``, ``at``): intermediate layers chosen by module name.

A :class:`FeatureTerm` is the KD term ``D`` of the feature methods. It is an ``nn.Module`` (so its
projectors move with the :class:`~kdlab.train.distiller.Distiller` and appear in its state dict) and is
called like every KD term, ``term(student_logits, teacher_logits, labels)``; the logits are not
used. The features themselves arrive through forward hooks:

* :meth:`FeatureTerm.attach` resolves the ``student name -> teacher name`` pairs against
  ``dict(model.named_modules())`` (an unknown name is a one-line :class:`ConfigError` listing the
  closest names);
* while :meth:`FeatureTerm.capturing` is active, a forward hook on each chosen module stores its
  output. The loop runs the teacher (live, in eval mode, under ``inference_mode``) and then the
  student on the same batch before it calls the objective, so both sides are there when the term
  is evaluated; the term then forgets them;
* on the first (dry) batch, :meth:`FeatureTerm.build_projectors` creates, for FitNets, a learned
  projector per pair whose widths differ: a 1×1 convolution for ``[N, C, H, W]`` maps, a linear
  layer for ``[N, D]`` vectors, mapping the student's width to the teacher's. The Distiller adds
  their parameters to the optimizer, and the lab saves them next to the student as
  ``student-distilled.projectors.safetensors`` (the student file itself stays loadable into the
  bare student architecture). Attention transfer reduces the channel axis and needs no projector.

Because the teacher's *features* are needed, not only its logits, the feature methods cannot use
precomputed teacher logits: :attr:`FeatureTerm.needs_teacher_features` is True, and the objective
reports it as :attr:`~kdlab.kd.objective.Objective.needs_teacher_features`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdlab.errors import ConfigError
from kdlab.kd import losses

FeatureKind = Literal["fitnet", "at"]


def resolve_module(model: nn.Module, name: str, *, side: str) -> nn.Module:
    """``dict(model.named_modules())[name]``; an unknown name raises a ConfigError with close names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=4, cutoff=0.4) or names[:6]
    raise ConfigError(
        f"distill.feature_pairs: {side} has no module '{name}'; close names: {', '.join(close)} "
        f"(all names: dict({side}.named_modules()))"
    )


def _first_tensor(output: Any) -> Tensor | None:
    """A module's output, or the first element of a tuple output (e.g. an LSTM's sequence)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    return None


class FeatureTerm(nn.Module):
    """``D = w · Σ_pairs loss(student feature, teacher feature)`` for FitNets or attention transfer.

    Args:
        pairs: ``{student module name: teacher module name}``, at least one pair.
        kind: ``"fitnet"`` (:func:`kdlab.kd.losses.fitnet_loss` after a projector) or ``"at"``
            (:func:`kdlab.kd.losses.at_loss`).
        weight: ``w`` for fitnet; for at it is β of :func:`~kdlab.kd.losses.at_loss` (default 10³).
    """

    needs_teacher_features = True

    def __init__(self, pairs: Mapping[str, str], *, kind: FeatureKind, weight: float | None = None) -> None:
        super().__init__()
        if not pairs:
            raise ConfigError(
                f"distill.feature_pairs: method '{kind}' needs at least one student->teacher layer pair, "
                "e.g. --set 'distill.feature_pairs={features.1: features.1}'"
            )
        if weight is not None and weight < 0:
            raise ConfigError(f"distill.feature_weight: must be >= 0 (got {weight})")
        self.pairs = dict(pairs)
        self.kind = kind
        self.weight = float(weight if weight is not None else (1000.0 if kind == "at" else 1.0))
        self.projectors = nn.ModuleDict()
        self._targets: dict[str, list[tuple[str, nn.Module]]] = {"student": [], "teacher": []}
        self._captured: dict[str, dict[str, Tensor]] = {"student": {}, "teacher": {}}
        self._handles: list[Any] = []
        self._depth = 0

    @staticmethod
    def projector_key(student_name: str) -> str:
        """ModuleDict key of a student layer's projector (module names may not contain dots)."""
        return student_name.replace(".", "__")

    # ------------------------------------------------------------------ hooks
    def attach(self, *, teacher: nn.Module, student: nn.Module) -> None:
        """Resolve the layer names against the two models (ConfigError on an unknown name)."""
        self._targets = {
            "student": [(s, resolve_module(student, s, side="student")) for s in self.pairs],
            "teacher": [(t, resolve_module(teacher, t, side="teacher")) for t in sorted(set(self.pairs.values()))],
        }

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Hooks on the chosen layers while active (re-entrant); removed on exit, captures cleared."""
        if not self._targets["student"]:
            raise RuntimeError("FeatureTerm.attach(teacher=, student=) must be called before capturing")
        if self._depth == 0:
            for side, targets in self._targets.items():
                for name, module in targets:
                    self._handles.append(module.register_forward_hook(self._hook(side, name)))
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                for handle in self._handles:
                    handle.remove()
                self._handles.clear()
                self.clear()

    def _hook(self, side: str, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            if tensor is None:
                raise ConfigError(
                    f"distill.feature_pairs: {side} module '{name}' returns {type(output).__name__}, not a tensor"
                )
            self._captured[side][name] = tensor

        return hook

    def clear(self) -> None:
        """Forget the captured features (they hold the student's autograd graph)."""
        for store in self._captured.values():
            store.clear()

    # ------------------------------------------------------------------ projectors
    def build_projectors(self) -> None:
        """Check the captured shapes of each pair and create the missing projectors (FitNets).

        Called after a dry forward of both models inside :meth:`capturing`. Projector weights are
        drawn from a fixed seed, so they do not depend on (or disturb) the global random state.
        """
        for s_name, t_name in self.pairs.items():
            s, t = self._get("student", s_name), self._get("teacher", t_name)
            where = f"student '{s_name}' {tuple(s.shape)} vs teacher '{t_name}' {tuple(t.shape)}"
            if s.dim() != t.dim() or s.dim() not in (2, 4) or (self.kind == "at" and s.dim() != 4):
                need = "[N, C, H, W] maps" if self.kind == "at" else "both [N, C, H, W] maps or both [N, D] vectors"
                raise ConfigError(f"distill.feature_pairs: {where}: method '{self.kind}' needs {need}")
            key = self.projector_key(s_name)
            if self.kind != "fitnet" or s.shape[1] == t.shape[1] or key in self.projectors:
                continue
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                proj: nn.Module = (
                    nn.Conv2d(s.shape[1], t.shape[1], kernel_size=1)
                    if s.dim() == 4
                    else nn.Linear(s.shape[1], t.shape[1])
                )
            self.projectors[key] = proj.to(s.device)

    def _get(self, side: str, name: str) -> Tensor:
        try:
            return self._captured[side][name]
        except KeyError:
            raise ConfigError(
                f"method '{self.kind}': no {side} feature from layer '{name}' for this batch; feature methods need "
                "the live teacher and student forward (precomputed teacher logits cannot provide features)"
            ) from None

    # ------------------------------------------------------------------ the KD term
    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        """The weighted feature loss of the batch just run; the logits and labels are not used."""
        try:
            total = student_logits.new_zeros((), dtype=torch.float32)
            for s_name, t_name in self.pairs.items():
                s = self._get("student", s_name)
                # The teacher ran under inference_mode; a plain copy can take part in autograd.
                t = self._get("teacher", t_name).clone()
                if self.kind == "at":
                    total = total + losses.at_loss(s, t, beta=self.weight)
                else:
                    key = self.projector_key(s_name)
                    if key in self.projectors:
                        s = self.projectors[key](s)
                    total = total + self.weight * losses.fitnet_loss(s, t)
            return total
        finally:
            self.clear()

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, pairs={self.pairs}, weight={self.weight}"
