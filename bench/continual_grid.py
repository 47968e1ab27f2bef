"""The studies of the continual testbed that carry no fixed bar, over worlds built at several
seeds (world seed = stream seed): PEFT against fine-tuning at budgets 0.25, 1 and 4; every merge
rule of EMA-merge; the meta-schedule against restarting cosine; the stream orderings.

Every cell is one `run_stream` on `WORLDS/s<S>` at stream seed S, written to
`OUT/runs/<config>/seed<S>.json`, `<config>` naming the fields that differ from the defaults, so
a configuration that two studies share (fine-tuning at budget 1, restart, random) runs once and
a second call runs only the missing ones. Each study is then summarised as mean [95%
t-interval] over seeds, and every cell against the study's reference (fine-tuning at the same
budget; interpolation; restarting cosine; the random ordering) as the interval of its per-seed
differences, with its MAFs relative to the reference's.

    emulate continual build --out WORLDS/s0 --size default --seed 0      # and 1, 2
    python bench/continual_grid.py --worlds WORLDS --seeds 0,1,2 --out G --jobs 2
    python bench/continual_grid.py --worlds WORLDS --seeds 0,1,2 --out G --report   # tables only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

FINAL = ("final.ka", "final.zs", "final.gm")
PEFT = ("finetune", "lora", "dora", "vera", "bitfit")
BUDGETS = (0.25, 1.0, 4.0)
RULES = ("interpolate", "ties", "dare", "magmax", "slerp")
ORDERINGS = ("random", "frequency", "performance", "similarity", "dataset")


def studies() -> dict[str, dict[str, dict]]:
    """Per study, per cell name: the `RunConfig` fields that differ from the defaults."""
    return {
        "budget": {f"{m}@{b:g}": {"method": m, "budget": b}
                   for m, b in itertools.product(PEFT, BUDGETS)},
        "merge": {f"ema-merge:{r}": {"method": "ema-merge", "merge_rule": r} for r in RULES},
        "schedule": {f"finetune:{s}": {"method": "finetune", "schedule": s}
                     for s in ("restart", "meta")},
        "ordering": {f"finetune:{o}": {"method": "finetune", "ordering": o} for o in ORDERINGS},
    }


def run_cell(world_dir: str, seed: int, fields: dict, out: str) -> tuple[str, float]:
    """One stream in a worker process (one thread: two workers share two cores fairly)."""
    import torch

    torch.set_num_threads(1)
    from emulate.common.cli import quiet_transformers
    from emulate.continual.pretrain import load_world
    from emulate.continual.stream import Data, RunConfig, run_stream

    quiet_transformers()
    started = time.process_time()
    world = load_world(Path(world_dir))
    config = RunConfig(seed=seed, **fields)
    config.check()
    result = run_stream(world, config, Data(world), lambda event: None)
    result["cpu_s"] = time.process_time() - started
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)  # a half-written cell is never read as done
    return out, result["cpu_s"]


def cell_path(out: Path, fields: dict, seed: int) -> Path:
    """Where the run of ``fields`` at ``seed`` lives: one file per distinct configuration."""
    from emulate.continual.stream import RunConfig

    default = RunConfig()
    name = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in sorted(fields.items()) if getattr(default, k) != v)
    return out / "runs" / (name or "default") / f"seed{seed}.json"


# Per study: the field it varies and the cell every other is compared with (same other fields)
REFERENCE = {"budget": ("method", "finetune"), "merge": ("merge_rule", "interpolate"),
             "schedule": ("schedule", "restart"), "ordering": ("ordering", "random")}


def cell_runs(out: Path, study: str, seeds: list[int]) -> dict[str, tuple[dict, list[dict]]]:
    """Per cell of ``study`` that ran at every seed: its fields and its runs in seed order."""
    runs = {}
    for cell, fields in studies()[study].items():
        paths = [cell_path(out, fields, s) for s in seeds]
        if all(p.exists() for p in paths):
            runs[cell] = fields, [json.loads(p.read_text()) for p in paths]
    return runs


def interval(values: list[float]) -> str:
    from emulate.continual.intervals import t_interval

    i = t_interval(values)
    return f"{i['mean']:+.3f} [{i['low']:+.3f}, {i['high']:+.3f}]"


def paired(runs: dict, study: str) -> list[str]:
    """Markdown rows: each cell minus its reference at the same seed (final KA, ZS, GM), as a
    mean and 95% interval of the per-seed differences, with whether the interval excludes 0;
    and its per-task MAFs relative to the reference's (equal compute)."""
    key, value = REFERENCE[study]
    lines = ["| cell − reference | Δ final ka | Δ final zs | Δ final gm | MAFs / reference's |",
             "|---|---:|---:|---:|---:|"]
    for cell, (fields, results) in runs.items():
        if fields[key] == value:
            continue
        wanted = {**fields, key: value}
        ref = next((c for c, (f, _) in runs.items() if f == wanted), None)
        if ref is None:
            continue
        cells = []
        for metric in ("ka", "zs", "gm"):
            diffs = [a["final"][metric] - b["final"][metric]
                     for a, b in zip(results, runs[ref][1], strict=True)]
            text = interval(diffs)
            low, high = (float(x) for x in text.split("[")[1].rstrip("]").split(", "))
            cells.append(text + (" *" if low > 0 or high < 0 else ""))
        mafs = [a["mafs_per_task"] / b["mafs_per_task"]
                for a, b in zip(results, runs[ref][1], strict=True)]
        lines.append(f"| {cell} − {ref} | " + " | ".join(cells)
                     + f" | {min(mafs):.3f}–{max(mafs):.3f} |")
    return lines


def report(out: Path, picked: list[str], seeds: list[int]) -> None:
    from emulate.continual.intervals import summarize_seeds

    for study in picked:
        runs = cell_runs(out, study, seeds)
        if not runs:
            continue
        summary = summarize_seeds({c: r for c, (_, r) in runs.items()})
        print(f"\n### {study} (seeds {','.join(map(str, seeds))}; mean [95% interval])\n")
        print("| cell | final ka | final zs | final gm | forgetting | steps/task | cpu s/run |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for cell, s in summary.items():
            vals = [f"{s[k]['mean']:.3f} [{s[k]['low']:.3f}, {s[k]['high']:.3f}]"
                    for k in (*FINAL, "forgetting")]
            results = runs[cell][1]
            steps = "/".join(map(str, sorted({r["steps_per_task"] for r in results})))
            cpu = sum(r.get("cpu_s", 0) for r in results) / len(results)
            print(f"| {cell} | " + " | ".join(vals) + f" | {steps} | {cpu:.0f} |")
        print("\nPaired by seed (* : the interval of the differences excludes 0):\n")
        print("\n".join(paired(runs, study)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worlds", type=Path, required=True, help="holds s<S>/ per seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--studies", default="budget,merge,schedule,ordering")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--report", action="store_true", help="tables of the cells already run")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    picked = args.studies.split(",")
    unknown = set(picked) - set(studies())
    if unknown:
        parser.error(f"unknown studies {sorted(unknown)}; choose from {sorted(studies())}")
    if not args.report:
        todo = {}  # study by study, each seed's cells together
        for study in picked:
            for s in seeds:
                for fields in studies()[study].values():
                    path = cell_path(args.out, fields, s)
                    if not path.exists():
                        todo[path] = (str(args.worlds / f"s{s}"), s, fields, str(path))
        todo = list(todo.values())
        print(f"{len(todo)} runs to do, {args.jobs} at a time", flush=True)
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(run_cell, *t) for t in todo]
            for i, f in enumerate(as_completed(futures), 1):
                if f.exception() is not None:  # the others still run; a rerun retries it
                    print(f"[{i}/{len(todo)}] failed: {f.exception()!r}", flush=True)
                    continue
                path, cpu = f.result()
                print(f"[{i}/{len(todo)}] {path} ({cpu:.0f} cpu s)", flush=True)
    report(args.out, picked, seeds)


if __name__ == "__main__":
    main()
