"""Data: every dataset returns a :class:`DataBundle` of disjoint, seeded, stratified splits."""

from kdlab.data import images as images
from kdlab.data import text_datasets as text_datasets
from kdlab.data.bundle import DATASETS, DataBundle, build_data
from kdlab.data.tensors import Batch, Loader, Split, TensorLoader, as_loader

__all__ = ["DATASETS", "Batch", "DataBundle", "Loader", "Split", "TensorLoader", "as_loader", "build_data"]
