"""`emulate generate`: sample completions from a formula over models."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from emulate.common.cli import fail, parse_pairs, quiet_transformers
from emulate.common.errors import EmulateError


def generate_command(
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
    from emulate.compose.composition import Composition
    from emulate.compose.sampling import Plausibility

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
