"""Wall time of a toy-world build: a fresh build, then the same build again (the cache).

Run by hand: `python bench/bench_world.py [--size micro] [--seed 0]`. Builds into a fresh
temporary directory with one worker per pair when two cores are there, as the command line does.
Tests check the cache by what it does (a cached build trains nothing); the times live here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="micro")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from emulate.world import build_world
    from emulate.world.family import build_workers

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / args.size
        started = time.perf_counter()
        build_world(out, size=args.size, seed=args.seed, progress=False,
                    workers=build_workers())
        fresh = time.perf_counter() - started
        started = time.perf_counter()
        build_world(out, size=args.size, seed=args.seed, progress=False)
        cached = time.perf_counter() - started
    print(f"{args.size} world, seed {args.seed}: fresh build {fresh:.1f} s, "
          f"cached build {cached:.3f} s")


if __name__ == "__main__":
    main()
