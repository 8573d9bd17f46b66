"""Hostile corpus: the CLI's own usage errors are typer's short usage message and exit 2, never a
traceback (a typer release that vendors click once turned every one into ModuleNotFoundError)."""

from __future__ import annotations

import pytest
from bounded import run_bounded

USAGE = {
    "unknown command": (["frobnicate"], "No such command"),
    "unknown option": (["run", "--bogus", "1"], "No such option"),
    "no command": ([], "Usage: kdlab"),
    "predict without arguments": (["predict"], "Missing argument"),
    "bad integer": (["compare", "--seeds", "abc"], "valid integer"),
    "option without its value": (["run", "--set"], "requires an argument"),
    "show without a folder": (["show"], "Missing argument"),
    "report with two folders": (["report", "a", "b"], "unexpected extra argument"),
}


@pytest.mark.parametrize("name", list(USAGE))
def test_usage_error_is_usage_message_exit_2(name: str) -> None:
    args, expected = USAGE[name]
    res = run_bounded(args, timeout=30)
    assert not res.timed_out
    assert "Traceback" not in res.err and "Traceback" not in res.out
    assert res.code == 2, (res.code, res.err)
    assert expected.lower() in (res.err + res.out).lower(), res.err
    assert len((res.err + res.out).splitlines()) < 40  # a short message, not a wall of text
