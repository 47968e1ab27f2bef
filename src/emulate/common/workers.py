"""Jobs on spawned worker processes (one torch thread each), their progress streamed back.

A world build trains its members two at a time; the vision ablation trains three variants and
evaluates each one as soon as it is trained, so that both cores stay busy. A job is a top-level
function called as ``fn(*args, report=...)``; ``report`` takes the progress events of
``common.progress``. After a job finishes, ``follow(name, result)`` may queue more jobs. With one
worker (or no script file to spawn from) the jobs run here, in the order they come.

An error or Ctrl-C in the calling process terminates the workers at once (a multiprocessing
pool's ``terminate``) rather than letting them finish jobs whose results would be thrown away.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Hashable
from pathlib import Path

Job = tuple[Callable, tuple]
Follow = Callable[[Hashable, object], dict]


def build_workers() -> int:
    """Processes a command-line build uses: two if the cores are there."""
    return min(2, os.cpu_count() or 1)


def run_jobs(jobs: dict[Hashable, Job], report, workers: int,
             follow: Follow | None = None) -> dict:
    """``{name: result}`` of every job, those queued by ``follow`` included."""
    follow = follow or (lambda name, result: {})
    if workers < 2 or not can_spawn():
        return _run_here(dict(jobs), report, follow)
    import multiprocessing as mp

    context = mp.get_context("spawn")
    results = {}
    with context.Manager() as manager:
        pool = context.Pool(workers, initializer=_worker_setup)
        try:
            events = manager.Queue()

            def submit(more: dict) -> dict:
                return {name: pool.apply_async(fn, args, {"report": events.put})
                        for name, (fn, args) in more.items()}

            running = submit(jobs)
            while running:
                next(iter(running.values())).wait(0.2)
                _drain(events, report)
                for name in [n for n, job in running.items() if job.ready()]:
                    results[name] = running.pop(name).get()
                    running |= submit(follow(name, results[name]))
            _drain(events, report)
            pool.close()
        finally:
            pool.terminate()  # after close(): the idle workers exit; otherwise: stop them now
            pool.join()
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
    import torch
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.set_num_threads(1)


def can_spawn() -> bool:
    """A spawned process re-imports ``__main__``: it needs a file (not an interactive shell)."""
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return main is None or Path(main).exists()
