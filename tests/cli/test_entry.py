"""The console script's entry (``kdlab.__main__:main``): Ctrl-C while the CLI is still importing."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

import pytest
from clihelp import CliResult, assert_one_line_error

from kdlab import __main__ as entry


def test_ctrl_c_during_the_cli_import_prints_aborted_and_exits_130(monkeypatch, capsys) -> None:
    real = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "kdlab.cli":
            raise KeyboardInterrupt
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    with pytest.raises(SystemExit) as e:
        entry.main()
    assert e.value.code == 130
    captured = capsys.readouterr()
    assert captured.err == "aborted\n" and captured.out == ""


@pytest.mark.parametrize("how", ["python -m kdlab", "console script"])
def test_the_entry_runs_the_cli(how: str) -> None:
    script = Path(sys.executable).parent / "kdlab"
    if how == "console script" and not script.exists():
        pytest.skip("kdlab is not installed as a console script here")
    argv = [sys.executable, "-m", "kdlab"] if how == "python -m kdlab" else [str(script)]
    proc = subprocess.run([*argv, "presets"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "digits" in proc.stdout
    bad = subprocess.run([*argv, "run", "no-such-preset"], capture_output=True, text=True, timeout=60)
    # a real interpreter's error: exit 2, one `error:` line, no traceback
    assert_one_line_error(CliResult(bad.returncode, bad.stdout, bad.stderr), "neither a preset nor a YAML file")


def test_the_entry_module_imports_nothing_heavy() -> None:
    heavy = "('torch', 'numpy', 'typer', 'kdlab.cli')"
    code = f"import sys, kdlab.__main__; print(sorted(m for m in {heavy} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr
