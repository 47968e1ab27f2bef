"""Decoding concurrent requests together: an asyncio scheduler over the engine's Decoders.

Strategy: continuous batching by merging, with interleaving as the fallback.

- Between two steps, the requests that queued up meanwhile are prefilled together as a new
  `Decoder` and merged into the running one (`Decoder.merge`): from the next step on, one
  forward per model serves old and new rows alike. A request waits at most one step plus its
  prefill for its first token, and rows per forward track the number of requests in flight.
- Rows that cannot share a forward (another composition, or knobs that switch a term off, so the
  decoder runs other models) form their own cohort. Up to `max_cohorts` cohorts are stepped in
  turn, one token each; so a request never waits for another batch to finish.
- Speculative requests (`Job.speculative`) batch the same way, between two rounds: arrivals
  are prefilled as a *joining* decoder, which takes each row's first token off that prefill
  (a step that runs no forward) and so reaches the running rows' state and merges; a request's
  first token waits for no one's round. A cohort takes no one in before its first round.
- Each row keeps its own SamplingParams (seed, temperature, stop, budget, weights), so requests
  with different settings share a batch, and a row's output does not depend on its batch-mates.

A cohort that has taken in `max_batch * 64` requests stops admitting (the engine keeps a little
state per finished row); the next arrivals start a fresh cohort and the old one drains.

Every engine call runs on one worker thread, in order (torch and the tokenizers are used by one
thread only); the event loop only routes deltas. A bounded queue answers `Overloaded` when full,
and a cancelled request (a client that went away) leaves its batch before the next forward.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import torch

from emulate.common.errors import PromptTooLongError
from emulate.compose.checks import EmptyPromptError
from emulate.compose.drafting import check_speculative
from emulate.compose.templates import Prompt
from emulate.server.jobs import Cohort, Job, Overloaded

log = logging.getLogger("emulate.server.batcher")

LIFETIME = 64  # a cohort admits up to max_batch * LIFETIME requests over its life


class Batcher:
    def __init__(self, compositions: dict, max_batch: int = 32, max_cohorts: int = 4,
                 max_queue: int = 256, threads: int | None = None, admit_wait: float = 0.02,
                 admit_fraction: float = 0.25):
        self.compositions = compositions
        self.max_batch = max_batch
        self.max_cohorts = max_cohorts
        self.max_queue = max_queue
        self.admit_wait = admit_wait
        self.admit_fraction = admit_fraction
        self._waiting: deque[Job] = deque()
        self._cohorts: list[Cohort] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="emulate-engine")
        self._task: asyncio.Task | None = None
        self.stats = {"requests": 0, "completed": 0, "failed": 0, "rejected": 0,
                      "cancelled_rows": 0, "tokens": 0, "steps": 0, "prefills": 0, "merges": 0,
                      "drafted": 0, "accepted_drafts": 0}
        self._reserved = 0  # rows of submitted jobs not yet in a cohort
        self._threads = threads
        self._threads_before = torch.get_num_threads()

    # lifecycle

    def start(self) -> None:
        if self._threads:  # small models on a busy CPU: oversubscribed threads crawl
            torch.set_num_threads(self._threads)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in list(self._waiting) + [o[0] for c in self._cohorts for o in c.owners]:
            job.fail(Overloaded("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)
        if self._threads:
            torch.set_num_threads(self._threads_before)

    @property
    def alive(self) -> bool:
        """Always: the engine runs in this process (EngineProcess answers False once its own
        process is gone)."""
        return True

    def metrics(self) -> dict:
        return {"active_rows": self._active(), "queued_rows": self._reserved,
                "cohorts": len(self._cohorts), "max_batch": self.max_batch,
                "max_cohorts": self.max_cohorts, "max_queue": self.max_queue, **self.stats}

    def _active(self) -> int:
        return sum(len(c.live) for c in self._cohorts)

    # requests

    async def submit(self, job: Job) -> None:
        """Check the job's prompts against every term, then queue it.

        Raises Overloaded when the queue is full, or the engine's error for a bad prompt or
        weight override (PromptTooLongError, GenerationParamsError, TemplateError, ...).
        """
        if job.rows > self.max_batch:
            raise ValueError(f"{job.rows} rows do not fit in a batch of {self.max_batch}")
        capacity = self.max_queue + self.max_cohorts * self.max_batch
        active = self._active()
        if active + self._reserved + job.rows > capacity:
            self.stats["rejected"] += 1
            raise Overloaded(f"the server is at capacity ({active} rows decoding, "
                             f"{self._reserved} queued); retry shortly")
        self._reserved += job.rows
        try:
            job.terms = await self.run(_check_job, self.compositions[job.model], job)
        except BaseException:
            self._reserved -= job.rows
            raise
        self.stats["requests"] += 1
        if job.cancelled:
            self._reserved -= job.rows
            return
        job.queued_at = time.monotonic()
        self._waiting.append(job)
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """Drop a job at once: out of the queue, or its rows out of their cohort's next step."""
        if job.cancelled or job.done.done():
            return
        job.abandon()
        if job in self._waiting:
            self._waiting.remove(job)
            self._reserved -= job.rows
        for cohort in self._cohorts:
            for index in list(cohort.live):
                if cohort.owners[index][0] is job:
                    cohort.live.discard(index)
                    cohort.cancels.add(index)
                    self.stats["cancelled_rows"] += 1

    async def run(self, fn, *args):
        """Run an engine call on the worker thread (every engine call goes through here)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _inference, fn, *args)

    # the scheduler

    async def _loop(self) -> None:
        while True:
            await self._admit()
            if not self._cohorts:  # idle (what still waits cannot start before a new arrival)
                self._wake.clear()
                await self._wake.wait()
                continue
            for cohort in list(self._cohorts):
                await self._step(cohort)

    async def _admit(self) -> None:
        """Prefill what waits, in groups that can share a decoder, and merge or start cohorts."""
        blocked: set[tuple] = set()
        while self._waiting:
            first = next((j for j in self._waiting if j.kind not in blocked), None)
            if first is None:
                return
            kind = first.kind
            target = self._open_cohort(kind, first.rows)
            if target is None and len(self._cohorts) >= self.max_cohorts:
                blocked.add(kind)
                continue
            if target is not None and (not target.decoder.takes_rows
                                       or self._gathering(kind, target)):
                blocked.add(kind)  # they join once it can take them in, or once gathered
                continue
            room = self.max_batch - (len(target.live) if target else 0)
            taken, rows = [], 0
            for job in self._waiting:
                if job.kind == kind and rows + job.rows <= room:
                    taken.append(job)
                    rows += job.rows
            if not taken:
                blocked.add(kind)
                continue
            self._waiting = deque(j for j in self._waiting if j not in taken)
            self._reserved -= rows
            await self._start(first.model, taken, target)

    def _gathering(self, kind: tuple, target: Cohort) -> bool:
        """Let a trickle of arrivals gather before paying a prefill for them: a prefill costs
        about one step, so merging one row per step would halve the step rate. They join once
        they are a quarter of the running rows, or the oldest has waited `admit_wait` seconds."""
        jobs = [j for j in self._waiting if j.kind == kind]
        rows = sum(j.rows for j in jobs)
        oldest = min(j.queued_at for j in jobs)
        return (rows < self.admit_fraction * len(target.live)
                and time.monotonic() - oldest < self.admit_wait)

    def _open_cohort(self, kind: tuple, rows: int) -> Cohort | None:
        """A running cohort that `rows` rows of `kind` can join, if one has room."""
        for cohort in self._cohorts:
            if (cohort.kind == kind and not cohort.decoder.done
                    and len(cohort.live) + rows <= self.max_batch
                    and len(cohort.owners) < self.max_batch * LIFETIME):
                return cohort
        return None

    async def _start(self, model: str, jobs: list[Job], target: Cohort | None) -> None:
        composition = self.compositions[model]
        prompts = [p for job in jobs for p in job.prompts]
        params = [p for job in jobs for p in job.params]
        first = []  # a speculative decoder that joins takes its first tokens off its prefill
        try:
            decoder = await self.run(composition.decoder, prompts, params, jobs[0].speculative,
                                     target is not None)
            if target is not None and not decoder.takes_rows and not decoder.done:
                first = await self.run(decoder.step)
        except Exception as exc:  # checked at submit, so unexpected: isolate the culprit
            if len(jobs) == 1:
                jobs[0].fail(exc)
                self.stats["failed"] += 1
            else:
                for job in jobs:
                    await self._start(model, [job], None)
            return
        self.stats["prefills"] += 1
        log.debug("prefilled %d rows (%s)", len(prompts), "merge" if target else "new cohort")
        offset = 0
        if (target is not None and target in self._cohorts and not decoder.done
                and target.decoder.can_merge(decoder)):
            self._apply_cancels(target)
            offset = await self.run(target.decoder.merge, decoder)
            assert offset == len(target.owners), "decoder and cohort disagree on prompt indices"
            self.stats["merges"] += 1
            target.add(jobs)
        else:
            target = Cohort(model, jobs[0].kind, decoder, [])
            target.add(jobs)
            if not decoder.done:  # (every row may have ended with its first token)
                self._cohorts.append(target)
        for job in jobs:
            if job.cancelled:  # gone while it was being prefilled
                for index, (owner, _) in enumerate(target.owners):
                    if owner is job and index in target.live:
                        target.live.discard(index)
                        target.cancels.add(index)
                        self.stats["cancelled_rows"] += 1
            elif not job.started.done():
                job.started.set_result(True)
        for delta in first:
            delta.index += offset
        self._deliver(target, first)

    def _apply_cancels(self, cohort: Cohort) -> None:
        for index in cohort.cancels:
            cohort.decoder.cancel(index)
        cohort.cancels.clear()

    async def _step(self, cohort: Cohort) -> None:
        decoder = cohort.decoder
        self._apply_cancels(cohort)
        try:
            deltas = await self.run(decoder.step)
        except Exception as exc:  # an engine failure ends this cohort, not the server
            self._cohorts.remove(cohort)
            for job in {id(o[0]): o[0] for o in cohort.owners}.values():
                if not job.done.done():
                    job.fail(exc)
                    self.stats["failed"] += 1
            return
        self.stats["steps"] += 1
        log.debug("stepped %d rows of cohort %x (%d cohorts, %d waiting)", len(deltas),
                  id(cohort) & 0xFFFF, len(self._cohorts), len(self._waiting))
        self._deliver(cohort, deltas)
        if decoder.done:
            self._cohorts.remove(cohort)
            self.stats["drafted"] += getattr(decoder, "proposed", 0)
            self.stats["accepted_drafts"] += getattr(decoder, "accepted", 0)

    def _deliver(self, cohort: Cohort, deltas) -> None:
        """Route each delta (indexed by the cohort's decoder prompts) to its job's row."""
        for delta in deltas:
            job, row = cohort.owners[delta.index]
            if job.cancelled or delta.finish_reason == "cancelled":
                continue
            self.stats["tokens"] += len(delta.token_ids)
            completion = None
            if delta.finish_reason is not None:
                cohort.live.discard(delta.index)
                completion = cohort.decoder.completion(delta.index)
            job.deliver(row, delta.text, delta.finish_reason, completion)
            if job.done.done():
                self.stats["completed"] += 1


def _inference(fn, *args):
    with torch.inference_mode():
        return fn(*args)


def _check_job(composition, job: Job) -> tuple[str, ...]:
    """What the decoder would reject, found before the job can spoil a shared batch.

    Returns the terms the job's rows need (as the Decoder picks them): rows that need the same
    terms can share a decoder.
    """
    check_speculative(composition, job.speculative)
    weights = composition.resolve_weights(job.params[0])
    for prompt in _unique(job.prompts):
        for term in composition.term_names:
            ids = composition.prompt_ids(term, prompt)
            limit = composition.context_length(term)
            if not ids:
                raise EmptyPromptError(f"the prompt renders to no tokens for term {term!r}; give "
                                       "some text to continue")
            if limit is not None and len(ids) >= limit:
                raise PromptTooLongError(
                    f"the prompt is {len(ids)} tokens for term {term!r}, but its model's context "
                    f"holds {limit} (and the completion needs room too); shorten the prompt"
                )
    watched = {p.plausibility.term for p in job.params if p.plausibility is not None}
    return tuple(t for t in composition.term_names if t in watched or weights[t] != 0)


def _unique(prompts: list[Prompt]) -> list[Prompt]:
    seen, unique = set(), []
    for prompt in prompts:
        key = repr(prompt)
        if key not in seen:
            seen.add(key)
            unique.append(prompt)
    return unique
