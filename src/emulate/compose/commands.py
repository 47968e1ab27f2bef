"""`emulate generate`: sample completions from a formula over models."""

from __future__ import annotations

import json
import logging
import sys
from typing import Annotated

import typer

from emulate.common.cli import fail, parse_pairs, quiet_transformers
from emulate.common.errors import EmulateError, GenerationParamsError


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
    device: Annotated[list[str], typer.Option(
        help="Device of every model (cpu, cuda:0; where terms combine) or NAME=DEVICE.")]
    = [],  # noqa: B006
    dtype: Annotated[list[str], typer.Option(
        help="float32|bfloat16|float16 for every model, or NAME=DTYPE.")] = [],  # noqa: B006
    device_map: Annotated[list[str], typer.Option(
        help="NAME=auto|balanced|sequential: split a model across devices (Accelerate).")]
    = [],  # noqa: B006
    max_memory: Annotated[list[str], typer.Option(
        help="NAME=0:40GiB,1:40GiB,cpu:100GiB: memory per device for NAME's device map.")]
    = [],  # noqa: B006
    offload_folder: Annotated[list[str], typer.Option(
        help="NAME=DIR: where NAME's device map offloads layers mapped to disk.")]
    = [],  # noqa: B006
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
    from emulate.compose.drafting import K_MAX, check_k
    from emulate.compose.placement import from_options
    from emulate.compose.sampling import plausibility_filter

    quiet_transformers()
    try:
        parameters = {k: float(v) for k, v in parse_pairs(param, "--param").items()}
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--param") from None
    try:
        if k is not None:  # before any model loads
            _check_k(k, check_k, K_MAX)
        filter_ = plausibility_filter(plausibility)
        default_device, default_dtype, placements = from_options({
            "device": device, "dtype": dtype, "device_map": device_map,
            "max_memory": max_memory, "offload_folder": offload_folder})
        composition = Composition(
            formula, parse_pairs(model, "--model"), parse_pairs(template, "--template"),
            device=default_device, dtype=default_dtype, parameters=parameters,
            placements=placements,
        )
        completions = composition.complete(
            prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, min_p=min_p, seed=seed, stop=stop, plausibility=filter_,
            speculative={"draft": draft, "k": k}
            if speculative or draft or k is not None else None,
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


def _check_k(k: int, check_k, k_max: int) -> None:
    """--k starts speculation at k draft tokens a round (>= 1); 0 is no way to switch it off
    (adaptive rounds may reach k = 0 on their own), so it is refused with how to."""
    try:
        check_k(k, k_max)
    except GenerationParamsError as exc:
        raise GenerationParamsError(f"{exc} (--k); to decode without speculation, leave out "
                                    "--k, --draft and --speculative", "k") from None


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


def placement_command(
    config: Annotated[str, typer.Argument(help="A model's config.json, or its checkpoint folder.")],
    max_memory: Annotated[str, typer.Option(
        help="Memory per device, e.g. 0:80GiB,1:80GiB,2:80GiB,3:80GiB (add cpu:SIZE to allow "
             "CPU offload).")],
    dtype: str = "bfloat16",
    strategy: Annotated[str, typer.Option(help="balanced, balanced_low_0, sequential or auto.")]
    = "balanced",
    as_json: Annotated[bool, typer.Option("--json", help="Print the device map as JSON.")]
    = False,
):
    """Dry run: the device map a model gets over the given devices, planned on the meta device
    (no weights are read or materialised)."""
    from rich.table import Table

    from emulate.common.cli import console
    from emulate.compose.placement import parse_memory
    from emulate.compose.placement_plan import gib, plan_device_map

    quiet_transformers()
    try:
        plan = plan_device_map(config, parse_memory(max_memory, "--max-memory"), dtype, strategy)
    except EmulateError as error:
        fail(error)
    if as_json:
        sys.stdout.write(json.dumps({"device_map": plan.device_map, "fits": plan.fits,
                                     "bytes_per_device": {str(k): v for k, v in
                                                          plan.bytes_per_device.items()}}) + "\n")
        return
    table = Table(title=f"{plan.parameters / 1e9:.1f} B parameters, {gib(plan.total_bytes)} "
                        f"in {dtype}, {strategy} over {len(plan.budget)} device(s)")
    for column in ("device", "budget", "weights placed", "modules"):
        table.add_column(column, justify="left" if column in ("device", "modules") else "right")
    for device, size in plan.bytes_per_device.items():
        modules = [m for m, d in plan.device_map.items() if d == device]
        shown = ", ".join(modules[:2]) + (f" ... ({len(modules)} modules)" if len(modules) > 2
                                          else "")
        budget = plan.budget.get(device)
        table.add_row(str(device), gib(budget) if budget else "-", gib(size), shown)
    console.print(table)
    console.print("fits on the accelerators" if plan.fits else
                  "does NOT fit on the accelerators: part is offloaded to CPU or disk",
                  style="green" if plan.fits else "red")
    console.print("Leave headroom below each budget for the KV cache and activations; the "
                  "map is the one from_pretrained(device_map=..., max_memory=...) computes.")
