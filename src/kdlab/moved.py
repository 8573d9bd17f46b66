"""Old import paths of modules that moved into the layered packages (``kd/``, ``train/``, ``lab/``,
``report/``, ``apps/``): ``import kdlab.losses`` gives the very module ``kdlab.kd.losses``, so code
written against the flat layout keeps working. New code imports the new paths."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

MOVED = {
    "kdlab.losses": "kdlab.kd.losses",
    "kdlab.objective": "kdlab.kd.objective",
    "kdlab.features": "kdlab.kd.features",
    "kdlab.loop": "kdlab.train.loop",
    "kdlab.checkpoint": "kdlab.train.checkpoint",
    "kdlab.accel": "kdlab.train.accel",
    "kdlab.distributed": "kdlab.train.distributed",
    "kdlab.reproduce": "kdlab.train.reproduce",
    "kdlab.teacher_cache": "kdlab.train.teacher_cache",
    "kdlab.distiller": "kdlab.train.distiller",
    "kdlab.progress": "kdlab.train.progress",
    "kdlab.metrics": "kdlab.train.metrics",
    "kdlab.compare": "kdlab.lab.compare",
    "kdlab.recovery": "kdlab.lab.recovery",
    "kdlab.runtime": "kdlab.lab.runtime",
    "kdlab.stats": "kdlab.report.stats",
    "kdlab.predict": "kdlab.apps.predict",
    "kdlab.export": "kdlab.apps.export",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module path to the module that now lives at its new path."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(MOVED[spec.name])
        self._own = (module.__spec__, getattr(module, "__loader__", None))
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system stamped the alias's spec on the module: give it back its own.
        module.__spec__, module.__loader__ = self._own


def install() -> None:
    """Put the old-path resolver on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModules())
