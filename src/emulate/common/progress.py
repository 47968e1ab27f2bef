"""Progress bars for training: one bar per model, fed by events from any process.

The bars go to stderr (the CLI's console), so that a command's stdout holds only its result:
`--json` output parses even when stdout is a file or a pipe.
"""

from __future__ import annotations

from contextlib import nullcontext


class TrainingBars:
    """Rich progress bars, or nothing when ``progress`` is false."""

    def __init__(self, progress: bool):
        self.progress = None
        self.tasks: dict = {}
        if progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            from emulate.common.cli import console

            self.progress = Progress(
                TextColumn("{task.description:<15}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                console=console,
            )

    def __enter__(self):
        return (self.progress or nullcontext()).__enter__()

    def __exit__(self, *exc):
        return (self.progress or nullcontext()).__exit__(*exc)

    def event(self, event: tuple) -> None:
        """("add", name, steps) or ("step", name, step, loss or None), from any process."""
        if self.progress is None:
            return
        if event[0] == "add":
            _, member, total = event
            self.tasks[member] = self.progress.add_task(member, total=total, loss="-")
        else:
            _, member, step, loss = event
            shown = "-" if loss is None else f"{loss:.3f}"
            self.progress.update(self.tasks[member], completed=step, loss=shown)
