"""Accuracy of the toy family's compositions on the birth-city tasks, through lm-eval.

Small helpful, large helpful, EFT up-scaled and down-scaled, each evaluated by
lm-evaluation-harness through the `emulate` model type on both groups of held-out people. The
up-scaled composition should answer about people only the large base read far better than the
small fine-tuned model does (what `emulate eval` shows with generations).

Run by hand: `python bench/bench_lm_eval.py [--world DIR]` (default: the cached default world).
"""

from __future__ import annotations

import argparse
import tempfile
import time

from rich.console import Console
from rich.table import Table

ROWS = (
    ("small helpful", "small_helpful"),
    ("large helpful", "large_helpful"),
    ("EFT up-scaled", "large_base + small_helpful - small_base"),
    ("EFT down-scaled", "small_base + large_helpful - large_base"),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    import emulate.compose.harness  # noqa: F401 (registers the model type)
    from emulate.common.cli import quiet_transformers
    from emulate.world import default_world_dir
    from emulate.world.tasks import write_tasks

    quiet_transformers()
    torch.set_num_threads(args.threads)
    world = args.world or str(default_world_dir("default", 0))
    folder = tempfile.mkdtemp()
    names = write_tasks(world, folder)
    manager = TaskManager(include_path=folder)
    table = Table(title=f"lm-eval accuracy, birth city (4 choices), world {world}")
    table.add_column("composition")
    for name in names:
        table.add_column(name.removeprefix("toy_birth_city_"), justify="right")
    table.add_column("seconds", justify="right")
    for label, formula in ROWS:
        started = time.perf_counter()
        result = simple_evaluate(
            model="emulate", model_args={"formula": formula, "model_dir": world,
                                         "template": "chat"},
            tasks=names, task_manager=manager, batch_size=32, device="cpu")
        cells = [f"{result['results'][n]['acc,none']:.3f} (n={result['n-samples'][n]['effective']})"
                 for n in names]
        table.add_row(label, *cells, f"{time.perf_counter() - started:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
