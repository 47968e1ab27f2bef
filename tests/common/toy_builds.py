"""A toy build for the cache tests, run as a script: ``toy_builds.py OUT MODE LOG``.

``gated``: writes one file, then waits (30 s at most) for a file ``go`` beside LOG before
writing the second and logging its pid (a build that another can be made to race);
``hang``: writes one file, says so on stdout, then sleeps (a build to interrupt);
``workers``: two spawned workers that log their pids and sleep (workers to interrupt).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from emulate.common.cache import cached_build
from emulate.common.workers import run_jobs

SPEC = {"files": 2, "bytes": 1 << 20}
SLEEP_S = 180  # far longer than any interrupt test waits: an exit before it was not a wait


def sleeper(log: str, report) -> None:
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(SLEEP_S)


def build(out: Path, mode: str, log: Path) -> Path:
    def fn(folder: Path) -> dict:
        (folder / "a.bin").write_bytes(os.urandom(SPEC["bytes"]))
        if mode == "gated":
            for _ in range(300):
                if (log.parent / "go").exists():
                    break
                time.sleep(0.1)
        if mode == "hang":
            print("building", flush=True)
            time.sleep(SLEEP_S)
        if mode == "workers":
            run_jobs({i: (sleeper, (str(log),)) for i in range(2)}, lambda e: None, workers=2)
        (folder / "sub").mkdir()
        (folder / "sub" / "b.txt").write_text("done")
        with log.open("a") as f:
            f.write(f"{os.getpid()}\n")
        return {"size": "toy", "seed": 0}

    return cached_build(out, "toy", "key-1", SPEC, fn)


if __name__ == "__main__":
    print(build(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])), flush=True)
