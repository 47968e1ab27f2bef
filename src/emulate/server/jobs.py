"""What the batcher schedules: a request's rows (`Job`) and a decoder in flight with the rows it
serves (`Cohort`), and the errors a request can meet before it decodes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from emulate.compose.decoding import Completion
from emulate.compose.sampling import SamplingParams
from emulate.compose.templates import Prompt


class Overloaded(Exception):
    """The queue is full; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class Job:
    """One API request: `prompts[i]` decoded with `params[i]` (prompts x n rows)."""

    def __init__(self, model: str, prompts: list[Prompt], params: list[SamplingParams],
                 speculative: bool | dict | None = None):
        loop = asyncio.get_running_loop()
        self.model = model
        self.prompts = prompts
        self.params = params
        self.speculative = speculative  # None: lockstep; True or options: speculative decoding
        self.rows = len(prompts)
        self.terms: tuple[str, ...] = ()  # the models its rows need (set when checked)
        self.events: asyncio.Queue = asyncio.Queue()  # (row, text, finish_reason) or Exception
        self.completions: list[Completion | None] = [None] * self.rows
        self.started: asyncio.Future = loop.create_future()  # prefilled, in a cohort
        self.done: asyncio.Future = loop.create_future()  # every row finished
        self.cancelled = False
        self.queued_at = 0.0
        self._remaining = self.rows

    @property
    def kind(self) -> tuple:
        """Jobs of one kind can share a decoder: same composition, models and decoding method."""
        method = None
        if self.speculative is not None:
            method = tuple(sorted((self.speculative if isinstance(self.speculative, dict)
                                   else {}).items()))
        return self.model, self.terms, method

    def deliver(self, row: int, text: str, finish_reason: str | None,
                completion: Completion | None) -> None:
        self.events.put_nowait((row, text, finish_reason))
        if finish_reason is not None:
            self.completions[row] = completion
            self._remaining -= 1
            if self._remaining == 0 and not self.done.done():
                self.done.set_result(self.completions)

    def fail(self, error: Exception) -> None:
        for future in (self.started, self.done):
            if not future.done():
                future.set_exception(error)
                future.exception()  # marked retrieved: its waiter may be gone
        self.events.put_nowait(error)

    def abandon(self) -> None:
        """The client is gone: nobody waits on this job any more."""
        self.cancelled = True
        self.started.cancel()
        self.done.cancel()


@dataclass
class Cohort:
    """One Decoder in flight; its prompt r belongs to owners[r] = (job, the job's row)."""

    model: str
    kind: tuple
    decoder: object
    owners: list[tuple[Job, int]]
    live: set[int] = field(default_factory=set)  # decoder prompts still decoding
    cancels: set[int] = field(default_factory=set)  # to cancel before the next step

    def add(self, jobs: list[Job]) -> None:
        start = len(self.owners)
        self.owners += [(job, r) for job in jobs for r in range(job.rows)]
        self.live |= set(range(start, len(self.owners)))
