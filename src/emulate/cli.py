"""The `emulate` command line: generate from a composition, build and evaluate the toy world."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from emulate.errors import EmulateError
from emulate.knobs_commands import audit_command, sweep_command
from emulate.server.commands import serve_command
from emulate.world.commands import demo_command, eval_command, world_app

app = typer.Typer(
    help="Emulated fine-tuning and emulated disalignment: compose models at decoding time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Emulated fine-tuning and emulated disalignment: compose language models at decoding time."""


def parse_pairs(values: list[str], option: str) -> dict[str, str]:
    """NAME=VALUE pairs from repeated options; a clear error for anything else."""
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest:
            raise typer.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint=option)
        pairs[name.strip()] = rest
    return pairs


def fail(error: Exception) -> None:
    console.print(f"[bold red]error:[/] {error}", highlight=False)
    raise typer.Exit(code=2)


def quiet_transformers() -> None:
    """Loading bars from transformers would interleave with ours."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


@app.command()
def generate(
    prompts: Annotated[list[str], typer.Argument(help="Prompts to complete.")],
    formula: Annotated[str, typer.Option(help="e.g. 'large + 1.0*(chat_small - small)'.")],
    model: Annotated[list[str], typer.Option(help="NAME=PATH, repeated: one per term.")],
    template: Annotated[
        list[str], typer.Option(help="NAME=plain|chat|'...{prompt}...', repeated.")
    ] = [],  # noqa: B006 (typer reads the default)
    param: Annotated[list[str], typer.Option(help="NAME=NUMBER formula parameter, e.g. beta=1.5.")]
    = [],  # noqa: B006
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    min_p: float = 0.0,
    seed: int | None = None,
    stop: Annotated[list[str], typer.Option(help="Stop string, repeatable.")] = [],  # noqa: B006
    plausibility: Annotated[
        str | None, typer.Option(help="Conservative decoding: TERM or TERM:TOP_P.")
    ] = None,
    device: str = "cpu",
    dtype: str | None = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per completion.")
    ] = False,
    speculative: Annotated[bool, typer.Option(
        help="Exact speculative decoding: a small term drafts, the formula verifies.")] = False,
    draft: Annotated[str | None, typer.Option(
        help="Draft term or formula (implies --speculative; default: small tuned term).")] = None,
    k: Annotated[int | None, typer.Option(
        "--k", help="Draft tokens per round to start from (implies --speculative).")] = None,
):
    """Complete PROMPTS by sampling from a formula over models."""
    from emulate.composition import Composition
    from emulate.sampling import Plausibility

    quiet_transformers()
    try:
        parameters = {k: float(v) for k, v in parse_pairs(param, "--param").items()}
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None
    try:
        filter_ = None
        if plausibility:
            term, _, top = plausibility.partition(":")
            filter_ = Plausibility(term, float(top)) if top else Plausibility(term)
        composition = Composition(
            formula, parse_pairs(model, "--model"), parse_pairs(template, "--template"),
            device=device, dtype=dtype, parameters=parameters,
        )
        completions = composition.complete(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, min_p=min_p, seed=seed, stop=stop, plausibility=filter_,
            speculative={"draft": draft, "k": k} if speculative or draft or k else None,
        )
    except EmulateError as error:
        fail(error)
    for prompt, completion in zip(prompts, completions, strict=True):
        if as_json:
            record = {
                "prompt": prompt, "completion": completion.text,
                "finish_reason": completion.finish_reason, "tokens": len(completion.token_ids),
            }
            sys.stdout.write(json.dumps(record) + "\n")
        else:
            sys.stdout.write(completion.text + "\n")


# The other commands live beside what they drive; they are registered here, in one place.
app.command("serve")(serve_command)
app.add_typer(world_app, name="world")
app.command("eval")(eval_command)
app.command("demo")(demo_command)
app.command("sweep")(sweep_command)
app.command("audit")(audit_command)
