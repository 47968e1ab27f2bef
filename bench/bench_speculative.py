"""Speculative decoding of an up-scaling composition against lockstep and the large model alone.

Run by hand: `python bench/bench_speculative.py [--world DIR]`. In one run, on the toy family
(`large_base + small_helpful - small_base`, chat prompts; skipped with a message if the world is
not built) and on random "roofline" Llamas (`large + small_tuned - small`), greedy and sampled
(T=1), batch 1 and 8, it measures tokens per second of
- the large model alone (`model.generate`),
- the lockstep composition (`Composition.complete`),
- the speculative composition (adaptive k; its drafts guess ahead by n-gram lookup),
- the speculative composition without lookup,
plus the acceptance rate and draft forwards per generated token (per row):
1. interleaved: all four in one process, taking turns prompt by prompt for several passes; the
   ratios of these are the figures to quote (a busy minute on a shared machine slows all four);
2. one fresh process per measurement (after a warm-up), for peak RSS and absolute tokens/s;
3. at batch 1 greedy, in one warm process per setup: lockstep with the library's forwards
   (`lean=False`), speculative with lean forwards for the draft only or none, lookup in each
   row's own text only, and fixed k with and without lookup (the plot).
Seconds are process CPU seconds by default (`--clock cpu`, one thread): on a machine shared with
other jobs, wall time measures their load as much as ours. Warm-ups use a prompt that is not
measured, and each interleaved pass starts from the lookup history the warm-up left, so no
answer is guessed from an earlier run of the same prompt.

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
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"


# --- the models ------------------------------------------------------------------------------


def setup(name: str, world: str | None, natural_ends: bool = False, workload: str = "both"):
    """(models {term: path}, formula, templates, prompts, a warm-up prompt not among them,
    generation kwargs). `natural_ends`: toy answers stop at their end-of-sequence token (at most
    64 tokens), as a user's do, instead of running to a fixed length."""
    if name == "toy":
        from emulate.world import load_world
        from emulate.world.corpus import eval_questions

        info = load_world(world)
        groups = {q: [x.text for x in eval_questions(info.world, q)]
                  for q in ("small_known", "large_only")}
        if workload in groups:  # every question once, spread over people and attributes
            questions = groups[workload][::7]
        elif workload == "mix":  # half and half, alternating
            questions = [q for pair in zip(groups["small_known"][3::14],
                                           groups["large_only"][::14], strict=False)
                         for q in pair]
        else:
            questions = [q for g in groups.values() for q in g][::7]
        models = {m: str(info.members[m]) for m in ("large_base", "small_helpful", "small_base")}
        return (models, "large_base + small_helpful - small_base", dict.fromkeys(models, "chat"),
                questions, groups["small_known"][1],
                {"max_new_tokens": 64} if natural_ends else
                {"max_new_tokens": 16, "ignore_eos": True})
    from roofline import PROMPTS, build_drafting_family

    models = build_drafting_family(RESULTS / "roofline_spec")
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
                       "lookup": kind != "speculative_no_lookup" and job["lookup"],
                       "stop": job.get("stop", 0.0) if kind == "speculative_stop" else 0.0}
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
    models, formula, templates, prompts, warmup, generation = setup(
        job["setup"], job["world"], job.get("natural_ends", False), job.get("workload", "both"))
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
    """Several systems in one process, taking turns on each batch of prompts (order rotating),
    so a slow minute on a shared machine slows them all: the ratios of these totals are the
    least noisy this machine gives. `job["variants"]`: {"label", "kind", option overrides}.
    Each system has its own view of the composition (same models, its own lookup history and
    adaptive k), and each pass starts from the history its warm-up left: no answer is guessed
    from another system's or an earlier pass's answer to the same prompt."""
    import copy

    from emulate.compose.drafting import composition_state

    composition, chunks, warmup, generation = load(job)
    variants = job["variants"]
    views = [copy.copy(composition) for _ in variants]
    stats = [{"proposed": 0, "accepted": 0, "rounds": 0, "draft_forwards": 0} for _ in variants]
    runs = [runner(v["kind"], {**job, **v}, view, generation, stat)
            for v, view, stat in zip(variants, views, stats, strict=True)]
    for run in runs:
        run(warmup, 0)
    histories = [copy.deepcopy(composition_state(view).get("history")) for view in views]
    out = []
    for repeat in range(job["passes"]):
        for view, history, stat in zip(views, histories, stats, strict=True):
            if history is not None:
                composition_state(view)["history"] = copy.deepcopy(history)
            stat.update(dict.fromkeys(stat, 0))
        totals = [[0, 0.0, 0.0] for _ in variants]  # tokens, wall, cpu
        for n, chunk in enumerate(chunks):
            for i in range(len(variants)):
                v = (n + i) % len(variants)
                if job.get("fresh") and histories[v] is not None:  # no answer seen before
                    composition_state(views[v])["history"] = copy.deepcopy(histories[v])
                start, cpu = time.perf_counter(), time.process_time()
                tokens = runs[v](chunk, 1000 + 100 * n)
                totals[v][0] += tokens
                totals[v][1] += time.perf_counter() - start
                totals[v][2] += time.process_time() - cpu
        for variant, (tokens, seconds, cpu), s in zip(variants, totals, stats, strict=True):
            out.append({**{k: v for k, v in job.items() if k != "variants"}, **variant,
                        "repeat": repeat, "tokens": tokens,
                        **rates(tokens, seconds, cpu, job["clock"]), **s,
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

MAIN = ("large_alone", "lockstep", "speculative", "speculative_no_lookup", "speculative_stop")


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
    parser.add_argument("--natural-ends", action="store_true",
                        help="toy answers stop at their natural end (EOS) instead of running "
                             "16 tokens past it; roofline models are random and keep fixed lengths")
    parser.add_argument("--interleaved-only", action="store_true",
                        help="only the interleaved ratios (the figures to quote), not the "
                             "one-process-per-measurement table or the k sweep")
    parser.add_argument("--workload", default="both",
                        choices=["both", "small_known", "large_only", "mix"],
                        help="toy questions about people the small base read, only the large "
                             "base read, a 50/50 mix, or the earlier sample of both")
    parser.add_argument("--stop", type=float, default=0.8,
                        help="speculative_stop: a row's drafts end where the draft is less sure")
    parser.add_argument("--fresh", action="store_true",
                        help="each question starts from the warm-up's lookup history (no "
                             "earlier question's answer to guess from)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from rich.console import Console
    from speculative_report import report, report_interleaved

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
        from roofline import build_drafting_family

        build_drafting_family(RESULTS / "roofline_spec")

    def base(name, batch, temperature, **extra):
        prompts = args.toy_prompts if name == "toy" else max(batch, args.roofline_prompts)
        return {"setup": name, "world": args.world, "threads": args.threads, "clock": args.clock,
                "k": 4,
                "adaptive": True, "lean": True, "lookup": True, "prompts": prompts, "batch": batch,
                "temperature": temperature, "natural_ends": args.natural_ends,
                "workload": args.workload, "stop": args.stop, "fresh": args.fresh, **extra}

    # The ratios: every system in one process, taking turns prompt by prompt.
    interleaved = [{"kind": kind, "label": f"{kind} (interleaved)"} for kind in MAIN]
    interleaved_jobs = [[base(name, batch, t, kind="interleaved", passes=args.passes,
                              variants=interleaved)]
                        for name in setups for t in (0.0, 1.0) for batch in args.batches]
    # Main table: one process per measurement (peak RSS), repeats interleaved.
    main_jobs = [[base(name, batch, t, kind=kind, label=kind, repeat=repeat)]
                 for repeat in range(args.repeats) for name in setups for t in (0.0, 1.0)
                 for batch in args.batches for kind in MAIN]
    # Batch 1 greedy, interleaved in one process per setup: the references again, variants
    # and fixed k (the plot).
    variants = [{"kind": kind, "label": f"{kind} (sweep)"} for kind in MAIN]
    variants += [{"kind": "lockstep_library", "label": "lockstep, library forwards"},
                {"kind": "speculative", "lean": "draft", "label": "speculative, lean draft only"},
                {"kind": "speculative", "lean": False, "label": "speculative, library forwards"}]
    variants += [{"kind": "speculative", "lookup": "own",
                  "label": "speculative, lookup in own text only"}]
    variants += [{"kind": kind, "k": k, "adaptive": False, "label": f"{kind}, fixed k={k}"}
                 for kind in ("speculative", "speculative_no_lookup") for k in args.ks]
    variants = [{**v, "sweep": True} for v in variants]
    sweep_jobs = [[base(name, 1, 0.0, kind="interleaved", passes=args.repeats,
                        variants=variants)] for name in setups]
    if args.interleaved_only:
        main_jobs, sweep_jobs = [], []
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
    if args.interleaved_only:
        report_interleaved(results, setups, args, console, MAIN, RESULTS)
    else:
        report(results, setups, args, console, MAIN, RESULTS)


if __name__ == "__main__":
    main()
