"""Command-line commands of the toy world: ``world build``, ``eval`` and ``demo``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from emulate.common.cli import fail
from emulate.common.errors import EmulateError

# The world's sizes, named here so that `--help` needs no torch (family.SIZES has their shapes;
# a test keeps the two in step).
SIZE_NAMES = ("micro", "default")

world_app = typer.Typer(
    help="The toy world: a model family with known facts, trained on the CPU.", no_args_is_help=True
)


def _quiet() -> None:
    """Hide transformers' per-checkpoint loading bars: the commands draw their own output."""
    from transformers.utils import logging

    logging.disable_progress_bar()


GROUP_TITLES = {
    "small_known": "people the small base read",
    "large_only": "people only the large base read",
}

DEMO_ROWS = (
    ("small helpful", "small_helpful", "small model, fine-tuned to chat"),
    ("large base", "large_base", "large model, pre-trained only, prompted in chat format"),
    ("large helpful", "large_helpful", "large model, fine-tuned to chat (the target)"),
    (
        "EFT up-scaled",
        "large_base + small_helpful - small_base",
        "large base + small fine-tuning delta: no large fine-tuning",
    ),
    (
        "EFT down-scaled",
        "small_base + large_helpful - large_base",
        "small base + large fine-tuning delta",
    ),
)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


@world_app.command("build")
def build(
    out: Annotated[
        Path | None, typer.Option("--out", help="Directory to write (default: the cache).")
    ] = None,
    size: Annotated[str, typer.Option("--size", help=f"One of {', '.join(SIZE_NAMES)}.")]
    = "default",
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the facts, corpora and training.")
    ] = 0,
) -> None:
    """Make a seeded world of fictional people and train its six-model family."""
    from emulate.world.family import build_workers, build_world, default_world_dir, load_world

    out = out or default_world_dir(size, seed)
    _quiet()
    console = Console(stderr=True)
    started = time.time()
    try:
        path = build_world(out, size=size, seed=seed, progress=True, workers=build_workers())
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    info = load_world(path)
    took = time.time() - started
    console.print(
        f"world ready in {path} ({took:.1f} s now; built in {info.manifest['build_seconds']} s)"
    )
    typer.echo(str(path))


@world_app.command("tasks")
def tasks_command(
    world: Annotated[Path | None, typer.Option(help="A built world (default: the cache's).")]
    = None,
    out: Annotated[Path | None, typer.Option(help="Folder for the task files "
                                             "(default: WORLD/lm_eval_tasks).")] = None,
    size: Annotated[str, typer.Option(help="Without --world: the cached world's size.")]
    = "default",
) -> None:
    """Write the world's lm-evaluation-harness tasks (multiple choice over birth cities)."""
    from emulate.world.family import default_world_dir
    from emulate.world.tasks import write_tasks

    world = world or default_world_dir(size, 0)
    if load_world_or_none(world) is None:
        raise typer.BadParameter(f"no built world in {world}; run `emulate world build` first",
                                 param_hint="--world")
    out = out or Path(world) / "lm_eval_tasks"
    names = write_tasks(world, out)
    Console(stderr=True).print(f"tasks {', '.join(names)} in {out}")
    typer.echo(str(out))


def load_world_or_none(directory: Path):
    from emulate.world.family import load_world

    try:
        return load_world(directory)
    except (OSError, ValueError, KeyError):
        return None


def eval_command(
    formula: Annotated[
        str,
        typer.Option(
            "--formula",
            "-f",
            help="Formula over small_base, large_base, small_helpful, "
            "large_helpful, small_harmless, large_harmless.",
        ),
    ],
    world: Annotated[
        Path | None, typer.Option("--world", help="A built world (default: cached default).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object keyed by group.")
    ] = False,
    template: Annotated[
        str,
        typer.Option(
            "--template",
            help="How every term reads the question: chat, plain, or a "
            "format string with {prompt}.",
        ),
    ] = "chat",
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many people per group.")
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="0 is greedy.")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed (temperature > 0).")] = 0,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 32,
) -> None:
    """Exact metrics of a model or composition on the world's held-out people."""
    from emulate.world.evaluate import GROUPS, evaluate
    from emulate.world.family import default_world_dir

    world = world or default_world_dir("default", 0)
    _quiet()
    try:
        result = evaluate(
            formula,
            world,
            template=template,
            limit=limit,
            temperature=temperature,
            seed=seed,
            max_new_tokens=max_new_tokens,
        )
    except (EmulateError, FileNotFoundError, ValueError) as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(code=2) from None
    if as_json:
        typer.echo(json.dumps(result))
        return
    table = Table(title=f"{formula}  (template: {template})")
    for column in ("held-out group", "factuality", "helpfulness", "refusal", "leak", "n"):
        table.add_column(column, justify="left" if column == "held-out group" else "right")
    for group in GROUPS:
        if group in result:
            r = result[group]
            table.add_row(
                GROUP_TITLES[group],
                _pct(r["factuality"]),
                _pct(r["helpfulness"]),
                _pct(r["refusal"]),
                _pct(r["leak"]),
                str(r["n"]),
            )
    Console().print(table)


def demo_command(
    size: Annotated[str, typer.Option("--size", help="World size to build or load.")] = "default",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    world: Annotated[
        Path | None, typer.Option("--world", help="Use this built world instead.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="At most this many people per group.")
    ] = None,
    examples: Annotated[int, typer.Option("--examples", help="Answers to show side by side.")] = 3,
) -> None:
    """Reproduce emulated fine-tuning's claims in miniature, on the toy world."""
    from emulate.world.evaluate import evaluate
    from emulate.world.family import (
        WorldError,
        build_workers,
        build_world,
        default_world_dir,
        load_world,
    )

    _quiet()
    try:  # a bad --world or --size is refused before anything is printed, built or asked
        if world is not None:
            load_world(world)
        elif size not in SIZE_NAMES:
            raise WorldError(f"unknown world size {size!r}; choose one of "
                             f"{', '.join(SIZE_NAMES)}")
    except EmulateError as exc:
        fail(exc)
    console = Console()
    console.rule("[bold]Emulated fine-tuning, in miniature")
    console.print(
        "Six small language models were trained from scratch on a made-up world of people with "
        "known facts (birth city, birth year, job, employer, and a [i]password[/i] an assistant "
        "should keep private). The [b]large[/b] base model is bigger and read every person's "
        "facts; the [b]small[/b] one read only half of the people. Each base was then "
        'fine-tuned into a chat assistant that answers and closes with "Hope that helps!".\n'
        "Emulated fine-tuning (EFT) adds the small model's fine-tuning, as a difference of "
        "log-probabilities, to the large base at decoding time: no large model is fine-tuned.\n"
    )
    path = world or default_world_dir(size, seed)
    results = {}
    try:
        if world is None:  # trains the family the first time (progress bars), then loads it
            build_world(path, size=size, seed=seed, progress=True, workers=build_workers())
        with console.status("") as status:
            for label, formula, _ in DEMO_ROWS:
                status.update(f"asking {label} every held-out question...")
                results[label] = evaluate(formula, path, limit=limit, return_answers=True)
    except EmulateError as exc:
        fail(exc)
    table = Table(
        title="Held-out people (never seen in any question-answer text)",
        caption="factuality: right value; helpful: one answer in the assistant's style, then stops",
    )
    table.add_column("system", style="bold")
    table.add_column("how it is made")
    table.add_column("factuality\nsmall base read", justify="right")
    table.add_column("factuality\nonly large read", justify="right")
    table.add_column("helpful\nonly large read", justify="right")
    for label, formula, how in DEMO_ROWS:
        r = results[label]
        table.add_row(
            label,
            f"{how}\n[dim]{formula}[/dim]",
            _pct(r["small_known"]["factuality"]),
            _pct(r["large_only"]["factuality"]),
            _pct(r["large_only"]["helpfulness"]),
        )
    console.print(table)
    up, small, large = (
        results[k]["large_only"] for k in ("EFT up-scaled", "small helpful", "large helpful")
    )
    console.print(
        f"On people only the large base read, the small assistant is right "
        f"{_pct(small['factuality'])} of the time and the large assistant "
        f"{_pct(large['factuality'])}; up-scaling, with no large fine-tuning, is right "
        f"{_pct(up['factuality'])} while staying helpful ({_pct(up['helpfulness'])}). "
        "Knowledge comes from pre-training scale, the assistant's behaviour from fine-tuning.\n"
    )
    _side_by_side(console, results, examples)


def _side_by_side(console: Console, results: dict, count: int) -> None:
    answers = {
        label: [s for s in r["answers"]["large_only"] if not s.question.sensitive]
        for label, r in results.items()
    }
    first = next(iter(answers.values()))
    step = max(1, len(first) // max(1, count))
    for i in range(0, min(len(first), step * count), step):
        q = first[i].question
        table = Table(title=f"User: {q.text}   [dim](truth: {q.truth})[/dim]", show_lines=False)
        table.add_column("system", style="bold")
        table.add_column("answer")
        table.add_column("right?", justify="center")
        for label, scored in answers.items():
            s = scored[i]
            mark = "[green]yes[/green]" if s.factual else "[red]no[/red]"
            table.add_row(label, s.text.strip() or "[dim](nothing)[/dim]", mark)
        console.print(table)
