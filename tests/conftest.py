"""Shared fixtures: tiny real data (scikit-learn's digits) and tiny models, so tests take seconds."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

os.environ.setdefault("MPLBACKEND", "Agg")
# Tiny test models gain nothing from intra-op threads, and on a shared 2-core machine extra
# threads make every step many times slower; subprocesses get OMP_NUM_THREADS=1 as well.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


class TinyNet(nn.Module):
    """Flatten + Linear(s): a classifier small enough for tests, optionally with dropout."""

    def __init__(self, in_features: int = 64, hidden: int = 16, classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="session")
def digits_xy() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return x, torch.tensor(d.target, dtype=torch.long)


@pytest.fixture
def tiny_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return TinyNet(hidden=64, dropout=0.5), TinyNet(hidden=8)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are collected everywhere and skipped where CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path_factory.getbasetemp() / "kdlab-cache"))
