"""Feeding bad input to the `emulate` command line: each refusal must be a clear error, never a
traceback, whose text the bad-input catalogues of every system check."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from emulate.cli import app

_runner = CliRunner()
_BOX = re.compile(r"[│╭╮╰╯─]+")  # typer's error panel draws a frame that wraps words


def refused(args) -> str:
    """Invoke `emulate ARGS`; assert it failed cleanly; return its output on one line."""
    result = _runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    raised = result.exception
    assert raised is None or isinstance(raised, SystemExit), (
        f"`emulate {' '.join(map(str, args))}` raised {type(raised).__name__}: {raised}"
    )
    text = " ".join(_BOX.sub(" ", result.output).split())
    assert result.exit_code != 0, text
    assert "Traceback" not in result.output, result.output
    return text


def says(text: str, *parts: str) -> None:
    """Every part appears in the message (whitespace collapsed, as the console may wrap it)."""
    for part in parts:
        assert " ".join(part.split()) in text, f"{part!r} not in: {text}"
