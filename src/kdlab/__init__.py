"""kdlab: knowledge distillation done properly — teacher, scratch student and distilled student,
trained with one loop and compared honestly.

Public API::

    from kdlab import Distiller, fit, evaluate, create_model, list_models, load_experiment, run_lab, load_run
"""

import os as _os

from kdlab.version import __version__

# OpenMP threads that spin while waiting make small models 10-80x slower as soon as another
# process competes for the cores (measured: a digits lab went from 0.4 s to 32 s of teacher
# training beside one other job). Passive waiting costs little on an idle machine. It only takes
# effect when kdlab is imported before torch (always so for the `kdlab` command); a value the
# user sets wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from typing import TYPE_CHECKING, Any

from kdlab.moved import install as _install_moved

_install_moved()  # old import paths (kdlab.losses, kdlab.loop, ...) keep working

# The API is imported on first use (PEP 562), so `import kdlab` — and `kdlab --help` — does not
# pay for torch, numpy and matplotlib until something needs them.
_API = {
    "Distiller": "kdlab.train.distiller",
    "create_model": "kdlab.models",
    "evaluate": "kdlab.train.loop",
    "fit": "kdlab.train.loop",
    "list_models": "kdlab.models",
    "load_experiment": "kdlab.config",
    "load_run": "kdlab.apps.predict",
    "run_lab": "kdlab.lab.run",
}

if TYPE_CHECKING:
    from kdlab.apps.predict import load_run
    from kdlab.config import load_experiment
    from kdlab.lab.run import run_lab
    from kdlab.models import create_model, list_models
    from kdlab.train.distiller import Distiller
    from kdlab.train.loop import evaluate, fit


def __getattr__(name: str) -> Any:
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kdlab' has no attribute {name!r}")


__all__ = [
    "Distiller",
    "__version__",
    "create_model",
    "evaluate",
    "fit",
    "list_models",
    "load_experiment",
    "load_run",
    "run_lab",
]
