"""``emulate continual ...``: build a world, run a stream, compare methods, and a demo."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from emulate.common.cli import fail, quiet_transformers
from emulate.common.errors import EmulateError
from emulate.common.progress import TrainingBars

continual_app = typer.Typer(
    help="Continual multimodal pretraining (FoMo-in-Flux) on a small CLIP and a synthetic "
    "image-caption universe.",
    no_args_is_help=True,
)

World = Annotated[Path, typer.Option("--world", help="A built world (`continual build`).")]
Ordering = Annotated[
    str,
    typer.Option(
        "--ordering",
        help="random, frequency, performance, similarity, dataset (add -reverse to reverse).",
    ),
]
Tasks = Annotated[int, typer.Option("--tasks", help="Tasks the stream is cut into.")]
Mix = Annotated[
    str, typer.Option("--mix", help="Batch shares P,D,B: pretraining, current task, buffer.")
]
Schedule = Annotated[str, typer.Option("--schedule", help="restart, meta or rsqrt.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the stream order and the training.")]
Steps = Annotated[
    int | None,
    typer.Option("--steps", help="Budget: full fine-tuning steps per task (world default)."),
]
Merge = Annotated[
    str,
    typer.Option(
        "--merge",
        help="Merge rule of the merging methods: interpolate, task-arithmetic, ties, dare, "
        "magmax or slerp.",
    ),
]
MergeWeight = Annotated[
    float,
    typer.Option("--merge-weight", help="Share (or scale) of the new task in a merge, in (0, 1]."),
]
Budget = Annotated[
    float,
    typer.Option("--budget", help="Per-task compute, a multiple of the default MAFs (> 0)."),
]


def _config(method, ordering, tasks, mix, schedule, seed, steps, merge, merge_weight,
            budget=1.0, fisher_samples=None):
    from emulate.continual.mixture import Mixture
    from emulate.continual.stream import RunConfig, RunConfigError

    if tasks < 1:  # before a world is loaded, not when the stream is cut
        raise RunConfigError(f"--tasks must be at least 1, got {tasks}")
    _check_seed(seed)
    config = RunConfig(method, ordering, tasks, Mixture.parse(mix), schedule, seed, steps,
                       merge_rule=merge, merge_weight=merge_weight, budget=budget,
                       fisher_samples=fisher_samples)
    config.check()
    return config


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise EmulateError(f"--seed {seed} is negative; give a seed of 0 or more")


def _check_out(out: Path) -> None:
    """An --out that cannot become a folder is refused before anything trains."""
    if out.exists() and not out.is_dir():
        raise EmulateError(f"--out {out} is a file, not a folder; remove it or choose another "
                           "--out")


@continual_app.command("build")
def build(
    out: Annotated[Path | None, typer.Option("--out", help="Directory (default: cache).")] = None,
    size: Annotated[str, typer.Option("--size", help="micro or default.")] = "default",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the universe and CLIP.")] = 0,
) -> None:
    """Draw a seeded universe and pretrain its small CLIP (cached); prints the directory."""
    from emulate.continual.pretrain import build_world, default_world_dir

    quiet_transformers()
    started = time.time()
    try:
        _check_seed(seed)
        path = build_world(out or default_world_dir(size, seed), size=size, seed=seed)
    except EmulateError as exc:
        fail(exc)
    Console(stderr=True).print(f"world ready in {path} ({time.time() - started:.1f} s)")
    typer.echo(str(path))


def _run_all(world_dir: Path, configs: list, progress: bool) -> list[dict]:
    from emulate.continual.pretrain import load_world
    from emulate.continual.stream import Data, run_stream

    world = load_world(world_dir)
    data = Data(world)
    bars = TrainingBars(progress)
    with bars:
        return [run_stream(world, c, data, bars.event) for c in configs]


@continual_app.command("run")
def run(
    world: Annotated[
        Path | None, typer.Option("--world", help="A built world (`continual build`).")
    ] = None,
    method: Annotated[
        str,
        typer.Option(
            "--method",
            help="finetune, lora, dora, vera, bitfit, "
            "lnfit, ewc, si, ema-merge, zs-merge, ft-merge, joint.",
        ),
    ] = "finetune",
    ordering: Ordering = "random",
    tasks: Tasks = 10,
    mix: Mix = "0.3334,0.3333,0.3333",
    schedule: Schedule = "restart",
    seed: Seed = 0,
    steps: Steps = None,
    merge: Merge = "interpolate",
    merge_weight: MergeWeight = 0.5,
    budget: Budget = 1.0,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Real data instead of a world: ROOT/stream/, ROOT/eval/."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="With --data: an HF CLIP folder or open_clip:ARCH[:FILE]."),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option("--replay", help="With --data: pretraining replay data (off if not given)."),
    ] = None,
    fisher_samples: Annotated[
        int | None,
        typer.Option("--fisher-samples", help="EWC's Fisher samples (default: a budget share)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Update the world's CLIP over a stream of tasks; KA and ZS after every task."""
    from emulate.continual.realstream import describe, run_files

    quiet_transformers()
    try:
        config = _config(method, ordering, tasks, mix, schedule, seed, steps, merge,
                         merge_weight, budget, fisher_samples)
        if world is not None and data is None:
            given = [o for o, v in (("--model", model), ("--replay", replay)) if v is not None]
            if given:
                raise EmulateError(
                    f"{' and '.join(given)} go with --data ROOT (real data) only; a --world "
                    f"brings its own CLIP and replay pool: drop {' and '.join(given)}, or give "
                    "--data instead of --world")
        if data is not None or world is None:
            result = run_files(world, data, model, replay, config)
        else:
            (result,) = _run_all(world, [config], progress=not as_json)
    except EmulateError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(result))
        return
    if data is not None:
        Console(stderr=True).print(describe(result))
    Console().print(results_table({method: result}))


def results_table(results: dict[str, dict]) -> Table:
    table = Table(
        title="Final and task-averaged KA / ZS (start: "
        f"KA {next(iter(results.values()))['start']['ka']:.3f}, "
        f"ZS {next(iter(results.values()))['start']['zs']:.3f})"
    )
    for column in (
        "method",
        "final KA",
        "final ZS",
        "final GM",
        "avg KA",
        "avg ZS",
        "avg GM",
        "steps/task",
        "GMAFs/task",
    ):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, r in results.items():
        f, a = r["final"], r["average"]
        table.add_row(
            name,
            *(f"{x:.3f}" for x in (f["ka"], f["zs"], f["gm"], a["ka"], a["zs"], a["gm"])),
            str(r["steps_per_task"]),
            f"{r['mafs_per_task'] / 1e9:.2f}",
        )
    return table


def markdown_table(results: dict[str, dict]) -> str:
    lines = [
        "| method | final KA | final ZS | final GM | avg KA | avg ZS | avg GM | steps/task "
        "| GMAFs/task |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        f, a = r["final"], r["average"]
        lines.append(
            f"| {name} | {f['ka']:.3f} | {f['zs']:.3f} | {f['gm']:.3f} | {a['ka']:.3f} | "
            f"{a['zs']:.3f} | {a['gm']:.3f} | {r['steps_per_task']} | "
            f"{r['mafs_per_task'] / 1e9:.2f} |"
        )
    return "\n".join(lines) + "\n"


def compare_methods(
    world: Path, methods: list[str], out: Path, progress: bool = True, **options
) -> dict[str, dict]:
    """Run every method on the same stream; write results.json, table.md, trajectory.png and
    matrix.png (the per-task accuracy matrices)."""
    from emulate.continual.plots import matrix_plot, trajectory_plot

    configs = [_config(m, **options) for m in methods]
    _check_out(out)
    results = dict(zip(methods, _run_all(world, configs, progress), strict=True))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "table.md").write_text(markdown_table(results))
    trajectory_plot(
        results,
        out / "trajectory.png",
        f"{options['ordering']} ordering, T={options['tasks']}, seed {options['seed']}",
    )
    matrix_plot(results, out / "matrix.png")
    return results


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise EmulateError(f"--seeds {text!r} is not distinct integers; give e.g. --seeds 0,1,2")
    return seeds


def compare_seeds(
    world: Path, methods: list[str], out: Path, seeds: list[int], progress=True, **options
) -> dict[str, dict]:
    """``compare_methods`` at every seed (its files in ``out/seed<S>``), then per method and
    metric the mean and 95% interval over seeds, written to ``out/intervals.json``."""
    from emulate.continual.intervals import summarize_seeds

    for s in seeds:  # every configuration checked before anything runs
        [_config(m, **options, seed=s) for m in methods]
    _check_out(out)
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    for s in seeds:
        results = compare_methods(world, methods, out / f"seed{s}", progress, **options, seed=s)
        for m in methods:
            runs[m].append(results[m])
    intervals = summarize_seeds(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "intervals.json").write_text(json.dumps({"seeds": seeds, **intervals}, indent=1))
    return intervals


@continual_app.command("compare")
def compare(
    world: World,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated method names.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the table, plot and JSON.")],
    ordering: Ordering = "random",
    tasks: Tasks = 10,
    mix: Mix = "0.3334,0.3333,0.3333",
    schedule: Schedule = "restart",
    seed: Seed = 0,
    seeds: Annotated[
        str | None,
        typer.Option("--seeds", help="Comma-separated seeds: mean and 95% interval over them."),
    ] = None,
    steps: Steps = None,
    merge: Merge = "interpolate",
    merge_weight: MergeWeight = 0.5,
    budget: Budget = 1.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print per method and metric: mean, low, high.")
    ] = False,
) -> None:
    """Run several methods on the same stream at equal compute; table, KA-ZS plot, JSON."""
    quiet_transformers()
    names = [m.strip() for m in methods.split(",") if m.strip()]
    options = dict(
        ordering=ordering,
        tasks=tasks,
        mix=mix,
        schedule=schedule,
        steps=steps,
        merge=merge,
        merge_weight=merge_weight,
        budget=budget,
    )
    try:
        if not names:
            raise EmulateError("--methods is empty; give e.g. --methods finetune,lora,ema-merge")
        if seeds is not None or as_json:
            picked = parse_seeds(seeds) if seeds is not None else [seed]
            intervals = compare_seeds(world, names, out, picked, not as_json, **options)
        else:
            results = compare_methods(world, names, out, seed=seed, **options)
    except EmulateError as exc:
        fail(exc)
    if seeds is not None or as_json:
        if as_json:
            typer.echo(json.dumps(intervals))
        else:
            Console().print(intervals_table(intervals))
        return
    Console().print(results_table(results))
    Console(stderr=True).print(f"wrote {out}/results.json, table.md, trajectory.png, matrix.png")


def intervals_table(intervals: dict[str, dict]) -> Table:
    table = Table(title="Mean [95% interval] over seeds")
    keys = ["final.ka", "final.zs", "final.gm", "forgetting", "bwt", "fwt"]
    table.add_column("method")
    for key in keys:
        table.add_column(key, justify="right")
    for name, metrics in intervals.items():
        cells = [metrics.get(k) for k in keys]
        table.add_row(
            name,
            *(f"{c['mean']:.3f} [{c['low']:.3f}, {c['high']:.3f}]" if c else "-" for c in cells),
        )
    return table


@continual_app.command("demo")
def demo(
    size: Annotated[str, typer.Option("--size", help="World size to build or load.")] = "default",
    seed: Seed = 0,
    tasks: Tasks = 5,
    out: Annotated[Path, typer.Option("--out")] = Path("continual-demo"),
) -> None:
    """Build (or load) a world and show the accumulation-retention trade-off in miniature."""
    from emulate.continual.pretrain import build_world, default_world_dir

    quiet_transformers()
    console = Console()
    console.rule("[bold]Continual multimodal pretraining, in miniature")
    console.print(
        "A small CLIP was pretrained from scratch on a synthetic universe of made-up concepts "
        "(coloured, patterned shapes). The stream teaches concepts it never or rarely saw "
        "(knowledge accumulation, KA); concepts it knows well are never trained on again and "
        "measure zero-shot retention (ZS). Each method gets the same compute per task.\n"
    )
    methods = ["finetune", "ema-merge", "zs-merge"]
    options = dict(ordering="random", tasks=tasks, mix="0.3334,0.3333,0.3333",
                   schedule="restart", seed=seed, steps=None, merge="interpolate",
                   merge_weight=0.5)
    try:
        [_config(m, **options) for m in methods]  # before the world is built
        _check_out(out)
        path = build_world(default_world_dir(size, seed), size=size, seed=seed)
        results = compare_methods(path, methods, out, **options)
    except EmulateError as exc:
        fail(exc)
    console.print(results_table(results))
    ft, ema = results["finetune"]["final"], results["ema-merge"]["final"]
    console.print(
        f"Fine-tuning learns the most (KA {ft['ka']:.2f}) at a cost in retention (ZS "
        f"{ft['zs']:.2f}); merging into a running average keeps more (ZS {ema['zs']:.2f}, "
        f"GM {ema['gm']:.2f} against {ft['gm']:.2f}). Plot: {out / 'trajectory.png'}"
    )
