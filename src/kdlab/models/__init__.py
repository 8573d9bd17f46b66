"""Models: a registry of factories sized from the data (``create_model``, ``list_models``)."""

from kdlab.models import text as text
from kdlab.models import vision as vision
from kdlab.models.registry import MODELS, count_params, create_model, list_models

__all__ = ["MODELS", "count_params", "create_model", "list_models"]
