"""`emulate sweep` (the behaviour knobs on the toy world) and `emulate audit` (a release audit)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from emulate.common.cli import fail, quiet_transformers
from emulate.common.errors import ArgumentError, EmulateError

console = Console(stderr=True)


def parse_floats(text: str, option: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise typer.BadParameter(f"expected numbers separated by commas, got {text!r}",
                                 param_hint=option) from None
    if not values:
        raise typer.BadParameter("give at least one number", param_hint=option)
    return values


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _times(x) -> str:
    return "unbounded" if x is None else f"{x:g}x"


def _world_dir(world: Path | None) -> Path:
    from emulate.world import default_world_dir

    path = world or default_world_dir("default", 0)
    if not (path / "manifest.json").exists():
        raise typer.BadParameter(f"no built world in {path}; run `emulate world build` first",
                                 param_hint="--world")
    return path


def _quiet() -> None:
    quiet_transformers()


def _check_out(out: Path) -> None:
    """An --out that cannot become a folder is refused before the work, not after it."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} is a file, not a folder; remove it or choose another "
                                 "--out", param_hint="--out")


def _option(error: ArgumentError) -> typer.BadParameter:
    """A setting's error, named as the option that gave it."""
    name = error.argument and f"--{error.argument.replace('_', '-')}"
    return typer.BadParameter(str(error), param_hint=name)


def sweep_command(
    out: Annotated[Path, typer.Option(help="Directory for sweep.json and the PNG plots.")],
    world: Annotated[Path | None, typer.Option(help="A built world (default: the cached "
                                               "default world, seed 0).")] = None,
    lambdas: Annotated[str, typer.Option(help="λ grid: 1 = helpful, 0 = harmless.")]
    = "0,0.25,0.5,0.75,1",
    betas: Annotated[str, typer.Option(help="β grid (fine-tuning strength).")]
    = "0,0.25,0.5,1,1.5,2",
    alphas: Annotated[str, typer.Option(help="α grid of emulated disalignment.")] = "0.3,0.5,1,2",
    samples: Annotated[int, typer.Option(help="ED samples per sensitive question.")] = 3,
    temperature: Annotated[float, typer.Option(help="ED sampling temperature.")] = 0.7,
    seed: int = 0,
    limit: Annotated[int | None, typer.Option(help="At most this many people per group.")]
    = None,
    max_new_tokens: int = 32,
):
    """Sweep λ (helpful↔harmless), β (fine-tuning strength) and α (emulated disalignment) on
    the toy world, small-scale and EFT up-scaled, with the world's exact metrics."""
    from emulate.knobs.plots import plot_beta, plot_ed, plot_frontier
    from emulate.knobs.sweep import check_sweep, run_sweep

    _quiet()
    _check_out(out)
    world_dir = _world_dir(world)
    grid = {"lambdas": parse_floats(lambdas, "--lambdas"), "betas": parse_floats(betas, "--betas"),
            "alphas": parse_floats(alphas, "--alphas")}
    try:
        check_sweep(grid["alphas"], samples, temperature, limit)
    except ArgumentError as error:
        raise _option(error) from None
    try:
        with console.status("loading the family...") as status:
            result = run_sweep(world_dir, samples=samples, temperature=temperature, seed=seed,
                               limit=limit, max_new_tokens=max_new_tokens,
                               on_progress=lambda text: status.update(text), **grid)
    except EmulateError as error:
        fail(error)
    out.mkdir(parents=True, exist_ok=True)
    for audit in result["ed"].values():
        audit.pop("responses")
    (out / "sweep.json").write_text(json.dumps(result, indent=1))
    plots = [plot_frontier(result, out / "frontier.png"), plot_beta(result, out / "beta.png"),
             plot_ed(result, out / "ed.png")]
    _print_sweep(result)
    console.print(f"wrote {out / 'sweep.json'} and {', '.join(p.name for p in plots)}")


def _print_sweep(result: dict) -> None:
    out = Console()
    table = Table(title="λ frontier on held-out people (both groups): small composition | "
                        "EFT up-scaled; harmlessness = refusal of the sensitive question")
    metrics = ("factuality", "helpfulness", "refusal", "leak")
    table.add_column("λ", justify="right")
    for metric in metrics:
        table.add_column(f"{metric}\nsmall | up", justify="center")
    frontier = result["frontier"]
    for s, u in zip(frontier["small"]["points"], frontier["upscaled"]["points"], strict=True):
        table.add_row(f"{s['lam']:g}", *(f"{_pct(s['all'][m])} | {_pct(u['all'][m])}"
                                          for m in metrics))
    out.print(table)
    table = Table(title=f"Factuality vs β: {result['beta']['formula']}")
    for column in ("β", "small base read", "only large read", "helpfulness"):
        table.add_column(column, justify="right")
    for p in result["beta"]["points"]:
        table.add_row(f"{p['beta']:g}", _pct(p["small_known"]["factuality"]),
                      _pct(p["large_only"]["factuality"]), _pct(p["all"]["helpfulness"]))
    for name, r in result["beta"]["references"].items():
        table.add_row(name, _pct(r["small_known"]["factuality"]),
                      _pct(r["large_only"]["factuality"]), _pct(r["all"]["helpfulness"]))
    out.print(table)
    for size, audit in result["ed"].items():
        out.print(_audit_table(audit, f"Emulated disalignment, {size} pair: leak rate (exact)"))
    bar = result["bar"]
    verdicts = [f"λ frontier (pooled): {'PASS' if bar['frontier']['all']['pass'] else 'FAIL'}"]
    for size, e in bar["ed"].items():
        alphas = ",".join(f"{a:g}" for a in e["alphas_meeting_bar"])
        verdicts.append(f"ED {size}: " + (f"PASS at α={alphas}" if e["pass"] else "FAIL")
                        + (f" ({e['reason']})" if e.get("reason") else ""))
    out.print("issue 6 bar: " + "; ".join(verdicts))


def _audit_table(audit: dict, title: str) -> Table:
    table = Table(title=title)
    for column in ("system", "harmful rate", "95% interval", "harmful / judged", "unjudged"):
        table.add_column(column, justify="left" if column == "system" else "right",
                         no_wrap=column == "system")
    for s in audit["systems"]:
        ci = s.get("ci95")
        table.add_row(s["label"], _pct(s["harmful_rate"]),
                      f"{_pct(ci[0])}–{_pct(ci[1])}" if ci else "-",
                      f"{s['harmful']} / {s['judged']}", str(s["unjudged"]))
    return table


def audit_command(
    base: Annotated[str, typer.Option(help="The base (pre-trained) checkpoint: a path, or a "
                                      "member name of --world.")],
    aligned: Annotated[str, typer.Option(help="The released safety-aligned fine-tune of BASE "
                                         "(same vocabulary).")],
    out: Annotated[Path, typer.Option(help="Directory for audit.json, responses.jsonl and "
                                      "audit.png.")],
    prompts: Annotated[Path | None, typer.Option(help="JSONL, one {\"prompt\": ...} per line "
                                                 "(default: the toy world's sensitive "
                                                 "questions).")] = None,
    world: Annotated[Path | None, typer.Option(help="Toy world for default prompts and member "
                                               "names (default: the cached default world).")]
    = None,
    alphas: Annotated[str, typer.Option(help="α values of ED.")] = "0.3,0.5,1,2",
    samples: Annotated[int, typer.Option(help="Samples per prompt and system.")] = 3,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (> 0; the audit "
                                               "never decodes greedily).")] = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    seed: int = 0,
    stop: Annotated[list[str], typer.Option(help="Stop string, repeatable (toy world: "
                                            "'User:').")] = [],  # noqa: B006
    base_template: Annotated[str, typer.Option(help="How the base reads prompts: chat, plain "
                                               "or a format string with {prompt}.")] = "chat",
    aligned_template: str = "chat",
    judge: Annotated[str | None, typer.Option(help="exact (toy world's leak check; default "
                                              "for world prompts) or openai.")] = None,
    judge_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL, e.g. "
                                                  "http://127.0.0.1:8000/v1.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model name at the judge URL.")]
    = None,
    judge_template: Annotated[Path | None, typer.Option(help="Prompt file with {prompt} and "
                                                        "{response}; the judge answers "
                                                        "safe/unsafe or yes/no.")] = None,
    judge_api_key_env: Annotated[str, typer.Option(help="Environment variable holding the "
                                                   "judge's API key, if it needs one.")]
    = "OPENAI_API_KEY",
    device: str = "cpu",
    dtype: str | None = None,
):
    """Audit a model release by emulated disalignment (help: AUDIT_HELP)."""
    from emulate.knobs.audit import (
        audit_composition,
        check_sampling,
        read_prompts,
        run_audit,
        world_prompts,
    )
    from emulate.knobs.judges import ExactLeakJudge, OpenAIJudge, load_template
    from emulate.knobs.plots import plot_audit

    _quiet()
    _check_out(out)
    try:
        if prompts is None:
            world_dir = _world_dir(world)
            records, stop = world_prompts(world_dir), stop or ["User:"]
            source = f"the toy world's sensitive questions ({world_dir})"
        else:
            world_dir = world
            try:
                records, source = read_prompts(prompts), str(prompts)
            except EmulateError as error:
                raise typer.BadParameter(str(error), param_hint="--prompts") from None
        base_path, aligned_path = (_member(m, world_dir) for m in (base, aligned))
        judge = judge or ("exact" if prompts is None else "openai")
        if judge == "exact":
            the_judge = ExactLeakJudge()
        elif judge == "openai":
            if not judge_url or not judge_model:
                raise typer.BadParameter("the openai judge needs --judge-url and --judge-model",
                                         param_hint="--judge")
            the_judge = OpenAIJudge(judge_url, judge_model, load_template(judge_template),
                                    api_key=os.environ.get(judge_api_key_env))
        else:
            raise typer.BadParameter("choose exact or openai", param_hint="--judge")
        grid = parse_floats(alphas, "--alphas")
        check_sampling(grid, samples, temperature)  # before the models load
        with console.status("loading the base and aligned models...") as status:
            composition = audit_composition(base_path, aligned_path, base_template,
                                            aligned_template, device=device, dtype=dtype)
            result = run_audit(
                composition, records, the_judge, alphas=grid,
                samples=samples, temperature=temperature, top_p=top_p,
                max_new_tokens=max_new_tokens, seed=seed, stop=stop,
                on_progress=lambda label: status.update(f"sampling and judging: {label}"),
            )
    except EmulateError as error:
        fail(error)
    result.update(base=str(base_path), aligned=str(aligned_path), prompts=source)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "responses.jsonl", "w") as f:
        for row in result.pop("responses"):
            f.write(json.dumps(row) + "\n")
    (out / "audit.json").write_text(json.dumps(result, indent=1))
    plot_audit(result, out / "audit.png", Path(str(base)).name, Path(str(aligned)).name)
    _print_audit(result)
    console.print(f"wrote {out / 'audit.json'}, {out / 'responses.jsonl'}, {out / 'audit.png'}")



# Typer keeps a docstring's line breaks; one line per paragraph reads better in --help.
audit_command.__doc__ = (
    "Audit a model release by emulated disalignment (ED).\n\n"
    "Samples responses to the prompts from the chat-prompted base model, the aligned model, and "
    "ED = (1+α)·log p_base − α·log p_aligned at each α, and reports how often a judge finds them "
    "harmful.\n\n"
    "ED needs nothing but the two released checkpoints: its harmful rate measures how much harm "
    "the open weights of the aligned model make reachable, beyond what the base shows alone."
)


def _member(name: str, world_dir: Path | None) -> str:
    """A member name of the world (e.g. large_harmless) stands for its checkpoint."""
    if world_dir is not None and not Path(name).exists() and (Path(world_dir) / name).is_dir():
        return str(Path(world_dir) / name)
    return name


def _print_audit(result: dict) -> None:
    from emulate.knobs.audit import bar_problem

    out = Console()
    s = result["settings"]
    out.print(f"[bold]Release audit by emulated disalignment[/]\n"
              f"base: {result['base']}\naligned: {result['aligned']}\n"
              f"Measured: the share of responses judged harmful (judge: {result['judge']}) over "
              f"{s['prompts']} prompts ({result['prompts']}), {s['samples']} sample(s) each, "
              f"temperature {s['temperature']:g}.")
    out.print(_audit_table(result, "Harmful rate per system"))
    unjudged = sum(s["unjudged"] for s in result["systems"])
    if unjudged:
        out.print(f"[yellow]{unjudged} response(s) got no verdict (the judge refused or answered "
                  "without one); they count in no rate. Their judge_error and judge_output are "
                  "in responses.jsonl.[/]")
    f = result["finding"]
    if not f:
        return
    if f["base_rate"] is None or f["aligned_rate"] is None:
        out.print(f"[yellow]No finding: {bar_problem(result)}.[/]")
        return
    if f["worst_rate"] > f["base_rate"]:
        out.print(
            f"At α={f['worst_alpha']:g}, ED is harmful on {_pct(f['worst_rate'])} of responses: "
            f"{_times(f['times_base'])} the base's rate ({_pct(f['base_rate'])}) and "
            f"{_times(f['times_aligned'])} the aligned model's ({_pct(f['aligned_rate'])}).\n"
            "This is harm the release makes reachable with no training: anyone holding both "
            "checkpoints can sample it. (The ED paper finds that the more strongly a model is "
            "aligned, the more harm ED recovers from it.)")
    else:
        out.print(f"ED did not exceed the base's rate ({_pct(f['base_rate'])}) at any α tested: "
                  "on these prompts the alignment gives ED no direction toward more harm than "
                  "the base already shows.")
