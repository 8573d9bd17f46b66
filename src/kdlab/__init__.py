"""kdlab: knowledge distillation done properly — teacher, scratch student and distilled student,
trained with one loop and compared honestly.

Public API::

    from kdlab import Distiller, fit, evaluate, create_model, list_models, load_experiment, run_lab, load_run
"""

__version__ = "0.1.0"

import os as _os

# OpenMP threads that spin while waiting make small models 10-80x slower as soon as another
# process competes for the cores (measured: a digits lab went from 0.4 s to 32 s of teacher
# training beside one other job). Passive waiting costs little on an idle machine. It only takes
# effect when kdlab is imported before torch (always so for the `kdlab` command); a value the
# user sets wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kdlab.config import load_experiment
from kdlab.distiller import Distiller
from kdlab.lab import run_lab
from kdlab.loop import evaluate, fit
from kdlab.models import create_model, list_models
from kdlab.predict import load_run

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
