"""Experiment configuration: schema (pydantic) and loading (presets, YAML, ``--set``)."""

from kdlab.config.load import PRESETS_DIR, list_presets, load_experiment
from kdlab.config.schema import ExperimentConfig

__all__ = ["PRESETS_DIR", "ExperimentConfig", "list_presets", "load_experiment"]
