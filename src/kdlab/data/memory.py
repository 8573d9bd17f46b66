"""How much memory this process can still take (and how many cores), and checks of memory and disk
before a dataset is allocated or written.

A legal ``data.image_size`` or ``data.max_len`` can still ask for more memory than the machine
has (10,000 images of 2048 px are 126 GB). :func:`check_memory` refuses such a dataset with one
line naming the key before the array exists, instead of numpy failing (or the kernel killing the
process) part-way through decoding. No dependency: ``/proc/meminfo``, the cgroup limit and the
address-space limit (``ulimit -v``) are read directly; where none is known, nothing is refused.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path

from kdlab.errors import DataError

GB = 1024**3
"""Bytes per GB as ``data.max_memory_gb`` counts them (GiB): the decoded-image budget, and the size
above which a training split stays off the GPU."""


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1: the image decode's processes
    and the threads that read a decoded split into memory."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def available_bytes() -> int | None:
    """Bytes this process can still allocate: the least of the memory the system has available,
    what its cgroup allows, and what its address-space limit leaves; None when none is known."""
    known = [n for n in (_meminfo_available(), _cgroup_left(), _address_space_left()) if n is not None]
    return min(known) if known else None


def check_memory(nbytes: int, key: str, what: str) -> None:
    """Raise :class:`DataError` naming ``key`` when ``nbytes`` (``what``, e.g. "1,000 images of
    3×2048×2048 px") is more than :func:`available_bytes`."""
    free = available_bytes()
    if free is not None and nbytes > free:
        raise DataError(
            f"{key}: {what} need {_size(nbytes)} of memory, and {_size(free)} is available; lower {key}"
            " (or use fewer samples: data.train_limit limits only training)"
        )


def check_disk(nbytes: int, folder: Path, key: str, what: str, fix: str) -> None:
    """Raise :class:`DataError` naming ``key`` when ``nbytes`` (``what``) is more than the free space
    of ``folder``'s file system, before anything is written there; ``fix`` says what to change."""
    import shutil

    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise DataError(
            f"{key}: {what} need {nbytes / 1e9:.1f} GB on disk in {folder}, and {free / 1e9:.1f} GB is free; {fix}"
        )


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def _meminfo_available() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def _cgroup_left() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 2**60:  # no limit
                return None
            return max(int(limit) - int(Path(usage_file).read_text().strip()), 0)
    return None


def _address_space_left() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY:
            return None
        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * resource.getpagesize()
        return max(soft - used, 0)
    return None
