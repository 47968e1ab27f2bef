"""Command-line plumbing shared by every system's commands."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

# Off a terminal (a log file, CI), rich would wrap every table at 80 columns; the result tables
# are wider than that. COLUMNS, when set, still decides.
console = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ
                  else 120)


def fail(error: Exception) -> None:
    """Print a user-facing error (no traceback) and exit with status 2."""
    console.print(f"[bold red]error:[/] {error}", highlight=False)
    raise typer.Exit(code=2)


def parse_pairs(values: list[str], option: str) -> dict[str, str]:
    """NAME=VALUE pairs from repeated options, each NAME once; a clear error for anything
    else."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest:
            raise typer.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint=option)
        if name.strip() in pairs:  # the last would silently replace the first
            raise typer.BadParameter(f"{name.strip()!r} is given twice; give each NAME once",
                                     param_hint=option)
        pairs[name.strip()] = rest
    return pairs


def quiet_transformers() -> None:
    """Loading bars from transformers would interleave with ours."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
