"""Files kdlab writes follow the umask (as open() would), not mkstemp's private 0600."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os, sys
os.umask(int(sys.argv[2], 8))
from pathlib import Path
from kdlab.io import atomic_write_bytes, atomic_write_json
folder = Path(sys.argv[1])
atomic_write_json(folder / "results.json", {"a": 1})
atomic_write_bytes(folder / "w.safetensors", b"x")
print(oct(os.umask(0)))
"""


@pytest.mark.parametrize(("umask", "mode"), [("022", 0o644), ("002", 0o664), ("077", 0o600)])
def test_new_files_follow_the_umask(tmp_path: Path, umask: str, mode: int) -> None:
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), umask], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == oct(int(umask, 8))  # reading the umask left it as it was
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == mode
    assert not list(tmp_path.glob(".*.tmp"))


def test_rewrite_keeps_following_the_umask(tmp_path: Path) -> None:
    from kdlab.io import FILE_MODE, atomic_write_text

    target = tmp_path / "history.csv"
    target.write_text("old")
    target.chmod(0o600)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == FILE_MODE
