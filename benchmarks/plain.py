"""The reference: the training loop a typical PyTorch user writes for distillation.

``DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)``, the teacher's forward pass under
``torch.no_grad()`` on every step, the KD loss written inline, and ``loss.item()`` read every step
(for a running average). Nothing here is tuned: it is what kdlab is measured against.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset


def kd_step_loss(s: Tensor, t: Tensor, y: Tensor, alpha: float, temperature: float) -> Tensor:
    ce = F.cross_entropy(s, y)
    kl = F.kl_div(F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1), reduction="batchmean")
    return alpha * ce + (1 - alpha) * kl


def train(
    student: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    teacher: nn.Module | None = None,
    epochs: int = 5,
    batch_size: int = 32,
    alpha: float = 0.05,
    temperature: float = 5.0,
    seed: int = 0,
) -> dict[str, float]:
    """Train ``student`` (with ``teacher``: by distillation) and return seconds and samples/s."""
    torch.manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    if teacher is not None:
        teacher.eval()
    student.train()
    start = time.perf_counter()
    samples = 0
    for _ in range(epochs):
        running = 0.0
        for xb, yb in loader:
            logits = student(xb)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
                loss = kd_step_loss(logits, t_logits, yb, alpha, temperature)
            else:
                loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
            samples += len(yb)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "samples_per_s": samples / seconds, "epochs": epochs}
