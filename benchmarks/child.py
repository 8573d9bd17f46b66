"""Run a benchmark module in a fresh Python process and read the JSON line it prints last.

Settings that are process-wide and cannot be undone (the host allocator) and peak-memory readings
need a process of their own per measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


def run_child(module: str, args: list[str]) -> dict[str, Any]:
    """``python -m module *args`` from the repository root; its last stdout line, parsed as JSON."""
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def machine(allocator: Any, load_start: tuple[float, float, float], **extra: Any) -> dict[str, Any]:
    """The ``machine`` record of a benchmark's JSON: platform, cores, torch, the host allocator and
    the load average when the benchmark started and now (a shared machine's load moves ratios)."""
    import os
    import platform

    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "host_allocator": allocator,
        **extra,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
