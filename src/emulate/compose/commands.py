"""`emulate generate`: sample completions from a formula over models."""

from __future__ import annotations

import json
import logging
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


def lm_eval_command(ctx: typer.Context):
    """Evaluate a composition with lm-evaluation-harness. Every argument is lm-eval's own
    (`--model_args`, `--tasks`, `--include_path`, `--limit`, ...); the model type is `emulate`,
    whose model_args name the formula, models, templates, parameters and placement:

        emulate lm-eval --model_args "formula=large_base + small_helpful - small_base,
        model_dir=WORLD,template=chat" --tasks toy_birth_city_large_only
        --include_path WORLD/lm_eval_tasks
    """
    import emulate.compose.harness  # noqa: F401 (registers the `emulate` model type)

    quiet_transformers()
    args = list(ctx.args)
    if "--model" not in args and not any(a.startswith("--model=") for a in args):
        args = ["--model", "emulate", *args]
    if not any(a.split("=")[0] == "--batch_size" for a in args):
        args += ["--batch_size", "16"]  # lm-eval's default of 1 would score row by row
    if "--device" not in args and not any(a.startswith("--device=") for a in args):
        import torch  # lm-eval's default device is cuda:0, on every machine

        args += ["--device", "cuda:0" if torch.cuda.is_available() else "cpu"]
    from lm_eval.__main__ import cli_evaluate

    argv, logger = sys.argv, logging.getLogger("lm_eval")
    handlers = list(logger.handlers)
    sys.argv = ["lm-eval", "run", *args]
    try:
        cli_evaluate()
    except EmulateError as error:
        fail(error)
    except ValueError as error:  # lm-eval's own answer to bad arguments ("Tasks not found")
        fail(f"lm-eval: {error}")
    finally:  # lm-eval's log handler holds this run's stderr: drop it with the run
        sys.argv = argv
        for handler in set(logger.handlers) - set(handlers):
            logger.removeHandler(handler)
