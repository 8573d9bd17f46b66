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
