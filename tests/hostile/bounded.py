"""Run one kdlab CLI invocation under a memory and time limit, so a hostile input that regresses
into a blow-up fails its test instead of taking the machine down.

The CLI runs in a forked child of the test process (kdlab and torch are already imported, so a
case costs milliseconds, not an interpreter start). The child gets ``RLIMIT_AS`` = its current
address space + ``mem_mb``: any allocation beyond that fails (``MemoryError`` / torch's "can't
allocate"), which the test then sees as a traceback. A child still running after ``timeout``
seconds is killed with SIGKILL and reported as ``timed_out``.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

MEM_MB = 1536
TIMEOUT_S = 60.0


@dataclass
class Bounded:
    code: int
    out: str
    err: str
    timed_out: bool = False
    seconds: float = 0.0


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def run_bounded(
    args: list[str], *, mem_mb: int = MEM_MB, timeout: float = TIMEOUT_S, cwd: Path | None = None
) -> Bounded:
    """``kdlab ARGS`` in a forked child with at most ``mem_mb`` MiB of new memory and ``timeout`` s."""
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # noqa: SIM115 - closed below
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
            sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
            if cwd is not None:
                os.chdir(cwd)
            limit = _address_space() + mem_mb * 2**20
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            sys.argv = ["kdlab", *args]
            from kdlab.cli import main

            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    code = os.waitstatus_to_exitcode(status)
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read().decode("utf-8", "replace"))
        f.close()
    return Bounded(code, texts[0], texts[1], timed_out, time.monotonic() - start)


def assert_clean_error(res: Bounded, match: str | None = None) -> str:
    """Exit 2, one ``error: …`` line on stderr naming ``match`` (a regex), no traceback."""
    import re

    assert not res.timed_out, f"timed out after {res.seconds:.0f} s"
    assert "Traceback" not in res.err, res.err[-3000:]
    assert res.code == 2, f"exit {res.code}, stderr: {res.err[-2000:]}"
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {res.err[:2000]!r}"
    assert lines[0].startswith("error: "), lines[0]
    assert len(lines[0]) < 1000, f"message of {len(lines[0])} characters"
    if match is not None:
        assert re.search(match, lines[0]), lines[0]
    return lines[0]


def assert_nothing_written(folder: Path) -> None:
    """No run folder and no temporary file was left under ``folder``."""
    left = [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp") or (p / "config.resolved.yaml").exists()]
    assert not left, f"left behind: {left}"


def run_in_process(args: list[str]) -> int:
    """``kdlab ARGS`` in this process (its imports then serve every forked case); the exit status."""
    from kdlab.cli import main

    old, sys.argv = sys.argv, ["kdlab", *args]
    try:
        main()
        return 0
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
