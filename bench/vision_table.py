"""The vision system's measured table for one built world, as JSON.

Usage: PYTHONPATH=src python bench/vision_table.py WORLD_DIR N [member/mode ...]
(default runs: direct/own and tools with every mode). Prints one JSON object keyed by run and
writes it to WORLD_DIR/table-<runs>.json. Several invocations with different runs can go in
parallel, one process each.
"""

import json
import sys
import time
from pathlib import Path

import torch

from emulate.vision.evaluate import MODES
from emulate.vision.report import evaluate_member


def main() -> None:
    torch.set_num_threads(1)
    world, n = Path(sys.argv[1]), int(sys.argv[2])
    runs = sys.argv[3:] or ["direct/own"] + [f"tools/{mode}" for mode in MODES]
    rows, started = {}, time.time()
    for run in runs:
        member, mode = run.split("/")
        rows[run] = evaluate_member(world, member, mode, n)
    rows["seconds"] = round(time.time() - started, 1)
    name = "-".join(r.replace("/", "_") for r in runs)
    (world / f"table-{name}.json").write_text(json.dumps(rows, indent=1))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
