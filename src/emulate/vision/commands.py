"""The ``emulate vision`` commands: build, synth, eval, ablate, ask, demo, bench, train, export."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from emulate.common.cli import console, fail
from emulate.common.cli import quiet_transformers as _quiet_transformers
from emulate.common.errors import EmulateError


def quiet_transformers() -> None:
    """Library bars (transformers, datasets) would interleave with ours."""
    import datasets

    _quiet_transformers()
    datasets.disable_progress_bars()


vision_app = typer.Typer(
    help="Thinking with images: a small VLM that crops, zooms and looks again before answering.",
    no_args_is_help=True,
)

WorldOption = Annotated[
    Path | None, typer.Option("--world", help="A built vision world (default: the cached one).")
]


MAX_SYNTH_QUESTIONS = 1_000_000


def _folder(path: Path, option: str) -> Path:
    """An output folder: refused up front when a file is in its place (before any work)."""
    if path.exists() and not path.is_dir():
        raise EmulateError(f"{option} {path} is a file; give a folder (it is created if missing)")
    return path


def _file(path: Path, option: str) -> Path:
    if path.is_dir():
        raise EmulateError(f"{option} {path} is a folder; give a file path to write")
    return path


def _seed(seed: int) -> int:
    if not 0 <= seed < 2**32:
        raise EmulateError(f"--seed {seed} is out of range: give 0 to {2**32 - 1}")
    return seed


def _world(world: Path | None) -> Path:
    from emulate.vision.build import default_dir, load_world

    world = world or default_dir()
    load_world(world)
    return world


@vision_app.command("build")
def build(
    out: Annotated[Path | None, typer.Option("--out", help="Directory to write.")] = None,
    size: Annotated[str, typer.Option("--size", help="micro or default.")] = "default",
    seed: Annotated[int, typer.Option("--seed", help="Seed of scenes, chains, training.")] = 0,
    kind: Annotated[str, typer.Option(
        "--kind", help="tiles (grid of tiles, Llava family) or objects (shapes named by their "
                       "looks, Qwen2.5-VL family)."
    )] = "tiles",
) -> None:
    """Synthesize verified chains, align a small VLM, train the direct and tools members."""
    from emulate.vision.build import build_world, load_world
    from emulate.vision.workers import build_workers

    quiet_transformers()
    started = time.time()
    try:
        _seed(seed)
        path = build_world(out, size=size, seed=seed, progress=True, workers=build_workers(),
                           world=kind)
    except EmulateError as exc:
        fail(exc)
    manifest = load_world(path)
    console.print(
        f"vision world ready in {path} ({time.time() - started:.1f} s now; "
        f"built in {manifest['build_seconds']} s)"
    )
    typer.echo(str(path))


@vision_app.command("synth")
def synth(
    world: WorldOption = None,
    out: Annotated[Path, typer.Option("--out", help="Directory for the dataset.")] = Path("chains"),
    n: Annotated[int, typer.Option("--n", help="Questions (half fine, half coarse).")] = 200,
) -> None:
    """Write verified chains as a `datasets` dataset, with stats.json."""
    from emulate.vision.build import load_world
    from emulate.vision.dataset import synthesize_dataset

    try:
        world = _world(world)
        if n < 1:
            raise EmulateError("--n must be at least 1")
        if n > MAX_SYNTH_QUESTIONS:
            raise EmulateError(f"--n {n} is out of range: give 1 to {MAX_SYNTH_QUESTIONS}")
        _folder(out, "--out")
        manifest = load_world(world)
    except EmulateError as exc:
        fail(exc)
    stats = synthesize_dataset(manifest["seed"], n, out, world=manifest.get("world", "tiles"))
    console.print(f"{stats['kept']} of {stats['generated']} chains kept -> {out}/dataset")
    typer.echo(json.dumps(stats))


@vision_app.command("eval")
def eval_command(
    world: WorldOption = None,
    member: Annotated[str, typer.Option("--member", help="direct or tools.")] = "tools",
    mode: Annotated[str, typer.Option("--mode", help="own, withheld, random or oracle.")] = "own",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    n: Annotated[int | None, typer.Option("--n", help="Held-out questions per kind.")] = None,
) -> None:
    """Exact metrics on held-out scenes, fine and coarse questions apart."""
    from emulate.vision.report import evaluate_member, table

    quiet_transformers()
    try:
        result = evaluate_member(_world(world), member, mode, n)
    except EmulateError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(table({f"{member} / {mode}": result}))


@vision_app.command("ablate")
def ablate(
    world: WorldOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    n: Annotated[int | None, typer.Option("--n", help="Held-out questions per kind.")] = None,
) -> None:
    """Train one member per tool variant (focus_area, zoom_in, reuse, all); compare them."""
    from emulate.vision.ablation import ablation, ablation_plot
    from emulate.vision.report import table

    quiet_transformers()
    try:
        world = _world(world)
        if n is not None and not 1 <= n <= MAX_SYNTH_QUESTIONS:
            raise EmulateError(f"--n {n} is out of range: give 1 to {MAX_SYNTH_QUESTIONS} "
                               "held-out questions per kind, or leave it out")
        result = ablation(world, n)
    except EmulateError as exc:
        fail(exc)
    plot = ablation_plot(result, world / "ablation.png")
    console.print(f"bar plot: {plot}")
    if as_json:
        typer.echo(json.dumps(result))
    else:
        console.print(table(result))


@vision_app.command("ask")
def ask(
    question: Annotated[str, typer.Argument(help="The question about the image.")],
    image: Annotated[Path, typer.Option("--image", help="The image file.")],
    world: WorldOption = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="Any image-text-to-text checkpoint.")
    ] = None,
    save: Annotated[Path, typer.Option("--save", help="Where observation images go.")] = Path(
        "observations"
    ),
    max_calls: Annotated[int, typer.Option("--max-calls", help="Tool calls, 0 to 32.")] = 4,
    max_turns: Annotated[
        int | None, typer.Option("--max-turns", help="Turns, 1 to 64 (calls + 2 if not given).")
    ] = None,
    call_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="auto, grammar, deepeyes, minio3, qwen_box or openai (auto: the project's "
            "grammar for its own models, deepeyes for Qwen2.5-VL, qwen_box for Qwen2-VL).",
        ),
    ] = "auto",
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", help="Reply length, 1 to 4096 tokens.")
    ] = None,
) -> None:
    """Answer a question about an image, calling tools; prints the trace, saves every image."""
    from emulate.vision.report import answer_question

    quiet_transformers()
    try:
        path = model if model is not None else _world(world) / "tools"
        _folder(save, "--save")
        trace, files = answer_question(
            path, image, question, save, max_calls, max_turns, call_format, max_new_tokens
        )
    except EmulateError as exc:
        fail(exc)
    for i, step in enumerate(trace.steps, 1):
        typer.echo(f"[{i}] {step.reply}")
        if step.error:
            typer.echo(f"    {step.error}")
        if step.observation is not None:
            typer.echo(f"    observation {step.observation}: {files[step.observation]}")
    typer.echo(f"answer: {trace.answer if trace.answer is not None else '(none)'}")
    typer.echo(f"picture: {files[-1]}")


@vision_app.command("demo")
def demo(
    world: WorldOption = None,
    out: Annotated[Path, typer.Option("--out", help="The trace picture.")] = Path(
        "vision-trace.png"
    ),
    n: Annotated[int, typer.Option("--n", help="Held-out questions per kind.")] = 60,
) -> None:
    """The table of members and modes, and one trace drawn as a picture."""
    from emulate.vision.build import build_world, default_dir
    from emulate.vision.report import demo_rows, draw_demo_trace, table
    from emulate.vision.workers import build_workers

    quiet_transformers()
    try:
        world = world or build_world(default_dir(), "default", 0, True, build_workers())
        world = _world(world)
        console.print(table(demo_rows(world, n)))
        path = draw_demo_trace(world, out)
    except EmulateError as exc:
        fail(exc)
    typer.echo(str(path))


@vision_app.command("bench")
def bench_command(
    model: Annotated[Path, typer.Option("--model", help="Any image-text-to-text checkpoint.")],
    file: Annotated[Path, typer.Option("--file", help="Multiple-choice JSONL (V* or plain).")],
    mode: Annotated[str, typer.Option("--mode", help="direct (no calls) or tools.")] = "tools",
    max_calls: Annotated[int, typer.Option("--max-calls", help="Tool calls, 0 to 32.")] = 4,
    traces: Annotated[
        Path | None, typer.Option("--traces", help="JSONL of every item's trace.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Accuracy on a benchmark file with a 95% interval, per category, calls per question."""
    from emulate.vision.bench import bench_file

    quiet_transformers()
    try:
        if traces is not None:
            _file(traces, "--traces")
        result = bench_file(model, file, mode, max_calls, traces)
    except EmulateError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(result))
        return
    console.print(
        f"accuracy {result['accuracy']:.1%} (95% {result['low']:.1%}-{result['high']:.1%}), "
        f"n {result['n']}, answered {result['answered']:.1%}, "
        f"calls/q {result['calls_per_question']:.2f}"
    )
    for name, row in result["by_category"].items():
        console.print(f"  {name}: {row['accuracy']:.1%} of {row['n']}")



@vision_app.command("train")
def train_command(
    model: Annotated[Path, typer.Option("--model", help="Any image-text-to-text checkpoint.")],
    data: Annotated[Path, typer.Option("--data", help="Chains from `emulate vision synth`.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the trained checkpoint.")],
    max_steps: Annotated[int, typer.Option("--max-steps", help="Steps (0: one epoch).")] = 0,
    member: Annotated[
        str,
        typer.Option("--member", help="Chains to learn: direct, focus_area, zoom_in, reuse, all."),
    ] = "all",
    call_format: Annotated[
        str, typer.Option("--format", help="Call format to train (auto: the checkpoint's own).")
    ] = "auto",
    batch: Annotated[int, typer.Option("--batch", help="Per-device batch.")] = 4,
    lr: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 1e-4,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the order and the init.")] = 0,
    bf16: Annotated[bool, typer.Option("--bf16", help="bfloat16 mixed precision (GPUs).")] = False,
) -> None:
    """SFT of a checkpoint on verified chains through TRL (runs under `accelerate launch`)."""
    from emulate.vision.sft import SFTOptions, train_checkpoint

    quiet_transformers()
    options = SFTOptions(max_steps, batch, lr, seed, member, call_format, bf16)
    try:
        _seed(seed)
        _folder(out, "--out")
        report = train_checkpoint(model, data, out, options)
    except EmulateError as exc:
        fail(exc)
    if report["main_process"]:  # under `accelerate launch`, one report, not one per process
        typer.echo(json.dumps(report))


@vision_app.command("export")
def export_command(
    world: WorldOption = None,
    out: Annotated[
        Path, typer.Option("--out", help="Folder for questions.jsonl and images.")
    ] = Path("vision-export"),
    n: Annotated[
        int | None, typer.Option("--n", help="Held-out questions per kind (eval's default).")
    ] = None,
) -> None:
    """The world's held-out questions (the ones `eval` scores) as a benchmark file."""
    from emulate.vision.export import export_world

    try:
        path = export_world(_world(world), _folder(out, "--out"), n)
    except EmulateError as exc:
        fail(exc)
    typer.echo(str(path))
