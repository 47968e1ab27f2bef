"""Speculative decoding of an up-scaling composition against lockstep and the large model alone.

Run by hand: `python bench/bench_speculative.py [--world DIR]`. In one run, on the toy family
(`large_base + small_helpful - small_base`, chat prompts; skipped with a message if the world is
not built) and on random "roofline" Llamas (`large + small_tuned - small`), greedy and sampled
(T=1), batch 1 and 8, it measures tokens per second of
- the large model alone (`model.generate`),
- the lockstep composition (`Composition.complete`),
- the speculative composition (adaptive k),
plus the acceptance rate and peak RSS (a fresh process per measurement, after a warm-up), then
at batch 1 greedy, in one warm process per setup: the same three again, lockstep with the
library's forwards (`lean=False`), speculative with lean forwards for the draft only or none,
and fixed k (the plot). Lockstep and speculative run the lean Llama forward by default.
Seconds are process CPU seconds by default (`--clock cpu`, one thread): on a machine shared with
other jobs, wall time measures their load as much as ours.

Independent random models agree no more than chance, so a draft would never be accepted. The
roofline family here is therefore built so the small model is a good draft: the large model
computes the random small model's function on its first dimensions, heads and layers (zeros
elsewhere), with noise added to every weight (greedy agreement ~0.8). The tuned small model is
a perturbed copy of the small one (as in bench/roofline.py). Sizes are roofline.py's: a large
~76M-parameter Llama, small ones ~16x smaller. Every system generates a fixed number of tokens
per prompt (EOS ignored): 16 on the toy family (its answers average 11 tokens), 32 on roofline.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


# --- the models ------------------------------------------------------------------------------


def build_roofline(root: Path, vocab_size: int = 8000, noise: float = 0.07) -> dict[str, str]:
    """small, small_tuned and large (small grown, plus noise); reused if already built."""
    import torch
    from roofline import SIZES, save_perturbed, tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    paths = {name: str(root / name) for name in ("large", "small", "small_tuned")}
    if all((Path(p) / "config.json").exists() for p in paths.values()):
        return paths
    tok = tokenizer(vocab_size)
    config = {"vocab_size": len(tok), "max_position_embeddings": 2048, "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 0}
    torch.manual_seed(1)
    small = LlamaForCausalLM(LlamaConfig(**config, **SIZES["small"])).eval()
    with torch.no_grad():
        small.lm_head.weight.mul_(16.0)  # peaked next-token distributions, as trained models have
    large = grow(small, LlamaConfig(**config, **SIZES["large"]), noise)
    for name, model in (("small", small), ("large", large)):
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    save_perturbed(small, tok, paths["small_tuned"])
    return paths


def grow(small, config, noise: float, seed: int = 0):
    """A larger Llama computing `small`'s function on its first dimensions, heads and layers
    (zeros elsewhere), then `noise` x the init scale added to every weight."""
    import math

    import torch
    from transformers import LlamaForCausalLM

    large = LlamaForCausalLM(config).eval()
    s, d = small.config, small.config.hidden_size
    hd = d // s.num_attention_heads
    assert hd == config.hidden_size // config.num_attention_heads
    per_kv_small = s.num_attention_heads // s.num_key_value_heads
    per_kv_large = config.num_attention_heads // config.num_key_value_heads
    heads = [(h // per_kv_small) * per_kv_large + h % per_kv_small
             for h in range(s.num_attention_heads)]  # same key/value head as in the small model
    shrink = math.sqrt(config.hidden_size / d)  # RMSNorm over the extra zero dims
    with torch.no_grad():
        for p in large.parameters():
            p.zero_()
        large.model.embed_tokens.weight[:, :d] = small.model.embed_tokens.weight
        large.lm_head.weight[:, :d] = small.lm_head.weight
        large.model.norm.weight[:d] = small.model.norm.weight / shrink
        for i, layer in enumerate(large.model.layers):
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
            if i >= s.num_hidden_layers:
                continue
            mine, theirs = layer, small.model.layers[i]
            for norm in ("input_layernorm", "post_attention_layernorm"):
                getattr(mine, norm).weight[:d] = getattr(theirs, norm).weight / shrink
            a, b = mine.self_attn, theirs.self_attn
            for h, big in enumerate(heads):
                rows, own = slice(big * hd, (big + 1) * hd), slice(h * hd, (h + 1) * hd)
                a.q_proj.weight[rows, :d] = b.q_proj.weight[own]
                a.o_proj.weight[:d, rows] = b.o_proj.weight[:, own]
            kv = s.num_key_value_heads * hd
            a.k_proj.weight[:kv, :d] = b.k_proj.weight
            a.v_proj.weight[:kv, :d] = b.v_proj.weight
            f = s.intermediate_size
            mine.mlp.gate_proj.weight[:f, :d] = theirs.mlp.gate_proj.weight
            mine.mlp.up_proj.weight[:f, :d] = theirs.mlp.up_proj.weight
            mine.mlp.down_proj.weight[:d, :f] = theirs.mlp.down_proj.weight
        generator = torch.Generator().manual_seed(seed)
        for name, p in large.named_parameters():
            if "norm" not in name:
                p.add_(noise * config.initializer_range * torch.randn(p.shape, generator=generator))
    return large


def setup(name: str, world: str | None):
    """(models {term: path}, formula, templates, prompts, a warm-up prompt not among them,
    generation kwargs)."""
    if name == "toy":
        from emulate.world import load_world
        from emulate.world.corpus import eval_questions

        info = load_world(world)
        questions = [q.text for group in ("small_known", "large_only")
                     for q in eval_questions(info.world, group)]
        models = {m: str(info.members[m]) for m in ("large_base", "small_helpful", "small_base")}
        return (models, "large_base + small_helpful - small_base", dict.fromkeys(models, "chat"),
                questions[::7], questions[3], {"max_new_tokens": 16, "ignore_eos": True})
    from roofline import PROMPTS

    models = build_roofline(RESULTS / "roofline_spec")
    models = {"large": models["large"], "small_tuned": models["small_tuned"],
              "small": models["small"]}
    return models, "large + small_tuned - small", {}, PROMPTS, "A few words to warm up:", {
        "max_new_tokens": 32, "ignore_eos": True}


# --- one measurement, in its own process -----------------------------------------------------


def runner(kind: str, job: dict, composition, generation, stats: dict):
    """run(chunk, seed) -> tokens generated, for one system; speculative ones add to stats."""
    import torch

    temperature = job["temperature"]
    if kind == "large_alone":
        large = composition.term_names[0]
        model = composition.loaded[composition.model_key(large)].model
        eos = sorted(composition.eos_token_ids)

        def run(chunk, seed):
            ids = [composition.prompt_ids(large, p) for p in chunk]
            width = max(map(len, ids))
            inputs = torch.tensor([[0] * (width - len(i)) + i for i in ids])
            mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
            torch.manual_seed(seed)
            kwargs = {"do_sample": temperature > 0, "pad_token_id": 0}
            if temperature > 0:
                kwargs.update(temperature=temperature, top_k=0, top_p=1.0)
            if generation.get("ignore_eos"):
                kwargs.update(min_new_tokens=generation["max_new_tokens"])
            out = model.generate(input_ids=inputs, attention_mask=mask, eos_token_id=eos,
                                 max_new_tokens=generation["max_new_tokens"], **kwargs)
            new = out[:, width:].tolist()
            if generation.get("ignore_eos"):
                return sum(map(len, new))
            return sum(next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
                       for row in new)

        return run
    speculative = None
    if kind.startswith("speculative"):
        speculative = {"k": job["k"], "adaptive": job["adaptive"], "lean": job["lean"],
                       "lookup": kind != "speculative_no_lookup" and job["lookup"]}
    lean = kind != "lockstep_library"

    def run(chunk, seed):
        composition.lean = lean
        params = composition.sampling_params(chunk, temperature=temperature, seed=seed,
                                             **generation)
        decoder = composition.decoder(chunk, params, speculative)
        while not decoder.done:
            decoder.step()
        for key in stats:
            stats[key] += getattr(decoder, key, 0)
        return sum(len(decoder.completion(i).token_ids) for i in range(len(chunk)))

    return run


def load(job: dict):
    """(composition, chunks of measured prompts, warm-up chunk, generation kwargs)."""
    import torch
    from transformers.utils import logging

    from emulate import Composition

    logging.disable_progress_bar()
    logging.set_verbosity_error()
    torch.set_num_threads(job["threads"])
    models, formula, templates, prompts, warmup, generation = setup(job["setup"], job["world"])
    batch = job["batch"]
    prompts = prompts[: job["prompts"]]
    chunks = [prompts[i : i + batch] for i in range(0, len(prompts), batch)]
    composition = Composition(formula, models, templates=templates)
    # Warm-up on a prompt not measured: the draft's lookup must not have seen the answers.
    return composition, chunks, [warmup] * len(chunks[0]), generation


def measure(job: dict) -> dict:
    """One system on every prompt, after a warm-up."""
    composition, chunks, warmup, generation = load(job)
    stats = {"proposed": 0, "accepted": 0, "rounds": 0, "draft_forwards": 0}
    run = runner(job["kind"], job, composition, generation, stats)
    run(warmup, 0)
    for key in stats:
        stats[key] = 0
    tokens, start, cpu = 0, time.perf_counter(), time.process_time()
    for n, chunk in enumerate(chunks):
        tokens += run(chunk, 1000 + 100 * n)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
    return {**job, "tokens": tokens, "seconds": seconds, "cpu_seconds": cpu,
            **rates(tokens, seconds, cpu, job["clock"]), "peak_rss_mb": peak, **stats,
            "draft_forwards_per_token": stats["draft_forwards"] * job["batch"] / tokens,
            "acceptance": stats["accepted"] / stats["proposed"] if stats["proposed"] else None}


def rates(tokens: int, seconds: float, cpu: float, clock: str) -> dict:
    return {"wall_tokens_per_s": tokens / seconds, "cpu_tokens_per_s": tokens / cpu,
            "tokens_per_s": tokens / (cpu if clock == "cpu" else seconds)}


def measure_interleaved(job: dict) -> list[dict]:
    """Every system of MAIN in one process, taking turns on each batch of prompts (order
    rotating), so a slow minute on a shared machine slows them all: the ratios of these
    totals are the least noisy this machine gives. Each pass starts from the lookup history
    the warm-up left (a prompt's answer is never guessed from an earlier pass)."""
    import copy

    from emulate.drafting import composition_state

    composition, chunks, warmup, generation = load(job)
    out = []
    stats = {kind: {"proposed": 0, "accepted": 0, "rounds": 0, "draft_forwards": 0}
             for kind in MAIN}
    runs = {kind: runner(kind, job, composition, generation, stats[kind]) for kind in MAIN}
    for run in runs.values():
        run(warmup, 0)
    state = composition_state(composition)
    history = copy.deepcopy(state["history"])
    for repeat in range(job["passes"]):
        state["history"] = copy.deepcopy(history)
        for kind in MAIN:
            stats[kind].update(dict.fromkeys(stats[kind], 0))
        totals = {kind: [0, 0.0, 0.0] for kind in MAIN}  # tokens, wall, cpu
        for n, chunk in enumerate(chunks):
            for i in range(len(MAIN)):
                kind = MAIN[(n + i) % len(MAIN)]
                start, cpu = time.perf_counter(), time.process_time()
                tokens = runs[kind](chunk, 1000 + 100 * n)
                total = totals[kind]
                total[0] += tokens
                total[1] += time.perf_counter() - start
                total[2] += time.process_time() - cpu
        for kind in MAIN:
            tokens, seconds, cpu = totals[kind]
            s = stats[kind]
            out.append({**job, "kind": kind, "label": f"{kind} (interleaved)", "repeat": repeat,
                        "tokens": tokens, **rates(tokens, seconds, cpu, job["clock"]), **s,
                        "draft_forwards_per_token": s["draft_forwards"] * job["batch"] / tokens,
                        "acceptance": s["accepted"] / s["proposed"] if s["proposed"] else None})
    return out


def child(jobs: list[dict]) -> list[dict]:
    """Run `jobs` in this (fresh) process; the peak RSS of a one-job process is that job's."""
    sys.path.insert(0, str(HERE))
    return [r for job in jobs
            for r in (measure_interleaved(job) if job["kind"] == "interleaved"
                      else [measure(job)])]


# --- the run -----------------------------------------------------------------------------------

MAIN = ("large_alone", "lockstep", "speculative", "speculative_no_lookup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", help="a built toy world (default: the default-size world)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="tokens per second of process CPU time (robust on a machine shared "
                             "with other jobs; one thread) or of wall time")
    parser.add_argument("--repeats", type=int, default=2,
                        help="repeats of the one-process-per-measurement table and of the sweep; "
                             "they show the best (least disturbed)")
    parser.add_argument("--passes", type=int, default=3,
                        help="passes over the prompts of the interleaved measurement (its ratios "
                             "are paired within a pass; the table shows their median)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8, 12, 16])
    parser.add_argument("--toy-prompts", type=int, default=16)
    parser.add_argument("--roofline-prompts", type=int, default=3,
                        help="prompts at batch 1 (batch b runs max(b, this) prompts)")
    parser.add_argument("--setups", nargs="+", default=["toy", "roofline"])
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from rich.console import Console

    console = Console(width=160)
    setups = list(args.setups)
    if "toy" in setups:
        from emulate.world import default_world_dir, load_world

        args.world = args.world or str(default_world_dir("default", 0))
        try:
            load_world(args.world)
        except FileNotFoundError:
            console.print(f"[yellow]no toy world at {args.world}: build it with "
                          "`emulate world build --size default`; skipping the toy family[/]")
            setups.remove("toy")
    if "roofline" in setups:
        build_roofline(RESULTS / "roofline_spec")

    def base(name, batch, temperature, **extra):
        prompts = args.toy_prompts if name == "toy" else max(batch, args.roofline_prompts)
        return {"setup": name, "world": args.world, "threads": args.threads, "clock": args.clock,
                "k": 4,
                "adaptive": True, "lean": True, "lookup": True, "prompts": prompts, "batch": batch,
                "temperature": temperature, **extra}

    # The ratios: every system in one process, taking turns prompt by prompt.
    interleaved_jobs = [[base(name, batch, t, kind="interleaved", passes=args.passes)]
                        for name in setups for t in (0.0, 1.0) for batch in args.batches]
    # Main table: one process per measurement (peak RSS), repeats interleaved.
    main_jobs = [[base(name, batch, t, kind=kind, label=kind, repeat=repeat)]
                 for repeat in range(args.repeats) for name in setups for t in (0.0, 1.0)
                 for batch in args.batches for kind in MAIN]
    # Batch 1 greedy in one warm process per setup, repeats interleaved: the references again,
    # variants and fixed k (the plot compares these only with each other).
    variants = [{"kind": kind, "label": f"{kind} (sweep)"} for kind in MAIN]
    variants += [{"kind": "lockstep_library", "label": "lockstep, library forwards"},
                {"kind": "speculative", "lean": "draft", "label": "speculative, lean draft only"},
                {"kind": "speculative", "lean": False, "label": "speculative, library forwards"}]
    variants += [{"kind": "speculative", "lookup": "own",
                  "label": "speculative, lookup in own text only"}]
    variants += [{"kind": kind, "k": k, "adaptive": False, "label": f"{kind}, fixed k={k}"}
                 for kind in ("speculative", "speculative_no_lookup") for k in args.ks]
    sweep_jobs = [[base(name, 1, 0.0, **v) for _ in range(args.repeats) for v in variants]
                  for name in setups]
    results = []
    context = mp.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        for jobs in interleaved_jobs + main_jobs + sweep_jobs:
            for r in pool.apply(child, (jobs,)):
                results.append(r)
                console.print(f"{r['setup']:>8} b={r['batch']} T={r['temperature']:g} "
                              f"{r['label']:<30} {r['tokens_per_s']:8.1f} tok/{args.clock}-s "
                          f"({r['wall_tokens_per_s']:.1f} tok/wall-s)"
                              + (f"  acceptance {r['acceptance']:.2f}"
                                 if r["acceptance"] is not None else ""))
    report(results, setups, args, console)


def best(results, **where) -> dict:
    """The least disturbed of the repeats (highest tokens/s), with the median added."""
    runs = [r for r in results if all(r[k] == v for k, v in where.items())]
    top = dict(max(runs, key=lambda r: r["tokens_per_s"]))
    top["median_tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in runs)
    top["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return top


def paired(results, numerator: str, denominator: str, **where) -> list[float]:
    """numerator / denominator tokens/s within each repeat (measured minutes apart at most)."""
    by_repeat = {}
    for r in results:
        if all(r[k] == v for k, v in where.items()) and r["label"] in (numerator, denominator):
            by_repeat.setdefault(r["repeat"], {})[r["label"]] = r["tokens_per_s"]
    return [pair[numerator] / pair[denominator] for _, pair in sorted(by_repeat.items())
            if len(pair) == 2]


def report(results, setups, args, console) -> None:
    from rich.table import Table

    table = Table(title=f"Speculative up-scaling: tokens per {args.clock} second, best of "
                        f"{args.repeats} (threads={args.threads}); 'paired': the median of the "
                        "ratios within each repeat")
    for column in ("setup", "T", "batch", "large alone", "lockstep", "speculative",
                   "spec/lockstep", "paired", "spec/large", "paired", "no lookup/lockstep",
                   "acceptance", "draft fwd/token", "peak RSS MB alone/lock/spec"):
        table.add_column(column, justify="right")
    summary = []
    for name in setups:
        for temperature in (0.0, 1.0):
            for batch in args.batches:
                where = {"setup": name, "temperature": temperature, "batch": batch}
                row = {kind: best(results, label=kind, **where) for kind in MAIN}
                alone, lock, spec, plain = (row[k]["tokens_per_s"] for k in MAIN)
                over_lock = paired(results, "speculative", "lockstep", **where)
                over_large = paired(results, "speculative", "large_alone", **where)
                item = {**where,
                        **{f"{k}_tok_s": row[k]["tokens_per_s"] for k in MAIN},
                        **{f"{k}_median_tok_s": row[k]["median_tokens_per_s"] for k in MAIN},
                        "speculative_over_lockstep": spec / lock,
                        "speculative_over_lockstep_paired": over_lock,
                        "speculative_over_large": spec / alone,
                        "speculative_over_large_paired": over_large,
                        "no_lookup_over_lockstep": plain / lock,
                        "no_lookup_over_lockstep_paired": paired(
                            results, "speculative_no_lookup", "lockstep", **where),
                        "acceptance": row["speculative"]["acceptance"],
                        "draft_forwards_per_token": {
                            k: row[k]["draft_forwards_per_token"] for k in MAIN[2:]},
                        "peak_rss_mb": {k: row[k]["peak_rss_mb"] for k in MAIN}}
                summary.append(item)
                table.add_row(name, f"{temperature:g}", str(batch), f"{alone:.1f}", f"{lock:.1f}",
                              f"{spec:.1f}", f"{spec / lock:.2f}x",
                              f"{statistics.median(over_lock):.2f}x", f"{spec / alone:.2f}x",
                              f"{statistics.median(over_large):.2f}x", f"{plain / lock:.2f}x",
                              f"{item['acceptance']:.2f}",
                              " / ".join(f"{v:.2f}" for v in
                                         item["draft_forwards_per_token"].values()),
                              " / ".join(f"{row[k]['peak_rss_mb']:.0f}" for k in MAIN[:3]))
    console.print(table)
    console.print(interleaved_table(results, setups, args, summary))
    sweep = Table(title="Batch 1, greedy; '(sweep)' and below: one warm process per setup")
    for column in ("setup", "configuration", "tok/s", "vs lockstep", "acceptance",
                   "draft fwd/token"):
        sweep.add_column(column, justify="right")
    variants = {}
    for name in setups:
        lock = best(results, setup=name, temperature=0.0, batch=1, label="lockstep (sweep)")
        labels = dict.fromkeys(r["label"] for r in results if r["setup"] == name
                               and r["batch"] == 1 and r["temperature"] == 0.0)
        for label in labels:
            r = best(results, setup=name, temperature=0.0, batch=1, label=label)
            variants.setdefault(name, {})[label] = {
                "tok_s": r["tokens_per_s"], "median_tok_s": r["median_tokens_per_s"],
                "acceptance": r["acceptance"], "rounds": r["rounds"]}
            sweep.add_row(name, label, f"{r['tokens_per_s']:.1f}",
                          f"{r['tokens_per_s'] / lock['tokens_per_s']:.2f}x",
                          "" if r["acceptance"] is None else f"{r['acceptance']:.2f}",
                          "" if r["acceptance"] is None else f"{r['draft_forwards_per_token']:.2f}")
    console.print(sweep)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "speculative.json"
    out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats,
                               "clock": args.clock,
                               "summary": summary, "batch1_greedy": variants,
                               "measurements": results}, indent=1))
    plot(variants, args.ks, RESULTS / "speculative_k.png", args.clock)
    console.print(f"wrote {out} and {RESULTS / 'speculative_k.png'}")


def interleaved_table(results, setups, args, summary):
    """The ratios measured with the systems taking turns in one process (see
    measure_interleaved): per pass, then their median; added to `summary`."""
    from rich.table import Table

    table = Table(title=f"Interleaved in one process, {args.passes} passes: ratios of tokens per "
                        f"{args.clock} second, median (per pass)")
    for column in ("setup", "T", "batch", "spec/lockstep", "spec/large", "no lookup/lockstep",
                   "no lookup/large", "acceptance", "draft fwd/token"):
        table.add_column(column, justify="right")
    for item in summary:
        where = {k: item[k] for k in ("setup", "temperature", "batch")}

        cells = []
        for key, a, b in (("speculative_over_lockstep", "speculative", "lockstep"),
                          ("speculative_over_large", "speculative", "large_alone"),
                          ("no_lookup_over_lockstep", "speculative_no_lookup", "lockstep"),
                          ("no_lookup_over_large", "speculative_no_lookup", "large_alone")):
            found = paired(results, f"{a} (interleaved)", f"{b} (interleaved)", **where)
            item[f"{key}_interleaved"] = found
            cells.append(f"{statistics.median(found):.2f}x ("
                         + ", ".join(f"{v:.2f}" for v in found) + ")")
        runs = {kind: [r for r in results if r["label"] == f"{kind} (interleaved)"
                       and all(r[k] == v for k, v in where.items())] for kind in MAIN[2:]}

        medians = {field: " / ".join(f"{statistics.median(r[field] for r in runs[k]):.2f}"
                                     for k in MAIN[2:])
                   for field in ("acceptance", "draft_forwards_per_token")}
        table.add_row(item["setup"], f"{item['temperature']:g}", str(item["batch"]), *cells,
                      *medians.values())
    return table


def plot(variants: dict, ks, path: Path, clock: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(variants), figsize=(5.5 * len(variants), 4), squeeze=False)
    for ax, (name, found) in zip(axes[0], variants.items(), strict=True):
        for kind, shown in (("speculative", "speculative, fixed k"),
                            ("speculative_no_lookup", "speculative without lookup, fixed k")):
            ax.plot(ks, [found[f"{kind}, fixed k={k}"]["tok_s"] for k in ks], "o-", label=shown)
        lines = (("speculative (sweep)", "speculative, adaptive k", "g", "--"),
                 ("speculative_no_lookup (sweep)", "without lookup, adaptive k", "c", "--"),
                 ("lockstep (sweep)", "lockstep", "r", ":"),
                 ("lockstep, library forwards", "lockstep, library forwards", "m", ":"),
                 ("large_alone (sweep)", "large model alone", "k", "-."))
        for label, shown, color, style in lines:
            ax.axhline(found[label]["tok_s"], color=color, linestyle=style, label=shown)
        ax.set(title=f"{name}: batch 1, greedy", xlabel="draft tokens per round (k)",
               ylabel=f"tokens per {clock} second")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
