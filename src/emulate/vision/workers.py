"""Jobs on spawned worker processes (one torch thread each), their progress streamed back.

A build trains two members at once; the ablation trains three variants and evaluates each one as
soon as it is trained, so that both cores stay busy. A job is a top-level function called as
``fn(*args, report=...)``; ``report`` takes the progress events of ``common.progress``. After a
job finishes, ``follow(name, result)`` may queue more jobs. With one worker (or no script file to
spawn from) the jobs run here, in the order they come.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Hashable
from pathlib import Path

import torch

Job = tuple[Callable, tuple]
Follow = Callable[[Hashable, object], dict]


def build_workers() -> int:
    return min(2, os.cpu_count() or 1)


def run_jobs(jobs: dict[Hashable, Job], report, workers: int,
             follow: Follow | None = None) -> dict:
    """``{name: result}`` of every job, those queued by ``follow`` included."""
    follow = follow or (lambda name, result: {})
    if workers < 2 or not can_spawn():
        return _run_here(dict(jobs), report, follow)
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = mp.get_context("spawn")
    results = {}
    with context.Manager() as manager, ProcessPoolExecutor(
        workers, mp_context=context, initializer=_worker_setup
    ) as pool:
        events = manager.Queue()

        def submit(more: dict) -> dict:
            return {pool.submit(fn, *args, report=events.put): name
                    for name, (fn, args) in more.items()}

        running = submit(jobs)
        while running:
            done, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(events, report)
            for future in done:
                name = running.pop(future)
                results[name] = future.result()
                running |= submit(follow(name, results[name]))
        _drain(events, report)
    return results


def _run_here(queue: dict, report, follow: Follow) -> dict:
    results = {}
    while queue:
        name = next(iter(queue))
        fn, args = queue.pop(name)
        results[name] = fn(*args, report=report)
        queue |= follow(name, results[name])
    return results


def _drain(events, report) -> None:
    while not events.empty():
        report(events.get())


def _worker_setup() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.set_num_threads(1)


def can_spawn() -> bool:
    """A spawned process re-imports ``__main__``: it needs a file (not an interactive shell)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is None or Path(main).exists()
