"""Multi-node rehearsal: two ``torchrun --nnodes 2`` agents on this machine match one process.

Each agent is one "node" with one process; they meet through a c10d rendezvous on 127.0.0.1 and
train over gloo on the CPU. The commands are the README's multi-node lines with HOST = 127.0.0.1.
The set-up, and so the tolerance, is the 2-process test's (tests/train/test_distributed.py): the
same untrained teacher checkpoint, a dropout-free student, and a world of 2 splitting each global
batch. Stated tolerance: per-epoch training loss within 1e-3 (absolute), test accuracy within 2
points of the one-process run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from test_distributed import assert_matches_one_process, one_process_run

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TORCHRUN = Path(sys.executable).parent / "torchrun"
TIMEOUT_S = 240  # both agents together; a rendezvous that never completes fails the test, not the suite


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_command(node_rank: int, endpoint: str, rdzv_id: str, out: Path, sets: list[str]) -> list[str]:
    """The README's multi-node command for one node (one process per node here)."""
    cmd = [str(TORCHRUN), "--nnodes", "2", "--node-rank", str(node_rank), "--nproc-per-node", "1"]
    cmd += ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", rdzv_id]
    cmd += ["-m", "kdlab", "run", "digits", "-q", "--out", str(out)]
    return cmd + [arg for s in sets for arg in ("--set", s)]


def test_two_torchrun_nodes_with_a_c10d_rendezvous_match_one_process(tmp_path: Path, monkeypatch) -> None:
    assert TORCHRUN.is_file(), f"{TORCHRUN} missing: install torch into this environment"
    one, sets = one_process_run(tmp_path, monkeypatch)

    endpoint, rdzv_id = f"127.0.0.1:{_free_port()}", f"kdlab-test-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "KDLAB_CACHE": str(tmp_path / "cache-nodes"), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            node_command(rank, endpoint, rdzv_id, tmp_path / "nodes", sets),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    deadline = time.monotonic() + TIMEOUT_S
    outputs: list[tuple[int, str, str]] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for rank, (code, _out, err) in enumerate(outputs):
        assert code == 0, f"node {rank}: exit {code}\n{err[-2000:]}"
    assert sum(out.count("run folder:") for _code, out, _err in outputs) == 1, "only global rank 0 may report"
    (nodes,) = list((tmp_path / "nodes").iterdir())  # only global rank 0 wrote a run folder

    assert_matches_one_process(nodes, one)
