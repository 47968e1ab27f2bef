"""Tokens/s of a three-term up-scaling formula against the large model alone (model.generate).

The composition runs as shipped (Llama terms through the checked lean forward) and, for
comparison, with the library's forwards (`lean=False`).

Run by hand: `python bench/bench_engine.py`. Each measurement runs in a fresh process (so peak
memory is its own) and configurations alternate across repeats, so the ratios printed come from
one run under the same machine load. Greedy, fixed length (EOS ignored).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).parent


def measure(kind: str, paths: dict, batch: int, new_tokens: int, threads: int) -> dict:
    import torch
    from roofline import PROMPTS
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    from emulate import Composition

    logging.disable_progress_bar()
    torch.set_num_threads(threads)
    prompts = (PROMPTS * batch)[:batch]
    if kind == "large_alone":
        tokenizer = AutoTokenizer.from_pretrained(paths["large"])
        tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(paths["large"]).eval()
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        inputs = tokenizer(prompts, return_tensors="pt", padding=True)

        def run():
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id)
            return (out.shape[1] - inputs["input_ids"].shape[1]) * batch
    else:
        composition = Composition(
            "large + small_tuned - small",
            {name: paths[name] for name in ("large", "small_tuned", "small")},
            lean=kind == "composition",
        )
        weights = sum(p.numel() * p.element_size()
                      for m in composition.loaded.values() for p in m.model.parameters())

        def run():
            completions = composition.complete(prompts, max_new_tokens=new_tokens, temperature=0,
                                               ignore_eos=True)
            return sum(len(c.token_ids) for c in completions)
    run()  # warm-up
    start = time.perf_counter()
    tokens = run()
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"tokens_per_s": tokens / elapsed, "peak_rss": peak, "weights": weights}


def child(args):
    import sys

    sys.path.insert(0, str(HERE))
    return measure(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--models", type=Path, default=HERE / "results" / "roofline")
    args = parser.parse_args()
    import sys

    sys.path.insert(0, str(HERE))
    from roofline import build, parameters

    paths = build(args.models)
    sizes = {name: parameters(path) for name, path in paths.items()}
    console = Console(width=max(Console().width, 130))  # a pipe is 80 wide: keep the table whole
    ratio = sizes["large"] / sizes["small"]
    console.print(f"parameters: large {sizes['large'] / 1e6:.1f}M, "
                  f"small {sizes['small'] / 1e6:.1f}M (ratio {ratio:.1f}x)")
    kinds = ["large_alone", "composition", "composition_library"]
    results: dict = {}
    context = mp.get_context("spawn")
    with context.Pool(1, maxtasksperchild=1) as pool:
        for batch in args.batches:
            for _ in range(args.repeats):
                for kind in kinds:
                    r = pool.apply(child, ((kind, paths, batch, args.new_tokens, args.threads),))
                    results.setdefault((batch, kind), []).append(r)
    table = Table(title="Up-scaling composition (large + small_tuned - small) vs large alone")
    for column in ("batch", "large alone tok/s", "composition tok/s", "ratio (per repeat)",
                   "library forwards tok/s", "ratio", "peak RSS large / comp (MB)",
                   "weights large / comp (MB)"):
        table.add_column(column, justify="right")
    report = []
    for batch in args.batches:
        alone = statistics.median(r["tokens_per_s"] for r in results[(batch, "large_alone")])
        comp = statistics.median(r["tokens_per_s"] for r in results[(batch, "composition")])
        library = statistics.median(
            r["tokens_per_s"] for r in results[(batch, "composition_library")])
        peak_a = max(r["peak_rss"] for r in results[(batch, "large_alone")]) / 2**20
        peak_c = max(r["peak_rss"] for r in results[(batch, "composition")]) / 2**20
        w_a = results[(batch, "large_alone")][0]["weights"] / 2**20
        w_c = results[(batch, "composition")][0]["weights"] / 2**20
        # Each repeat measured the systems back to back: its own ratio shows the spread.
        paired = sorted(c["tokens_per_s"] / a["tokens_per_s"] for a, c in zip(
            results[(batch, "large_alone")], results[(batch, "composition")], strict=True))
        table.add_row(str(batch), f"{alone:.1f}", f"{comp:.1f}",
                      f"{comp / alone:.2f} ({paired[0]:.2f}-{paired[-1]:.2f})",
                      f"{library:.1f}", f"{library / alone:.2f}",
                      f"{peak_a:.0f} / {peak_c:.0f}", f"{w_a:.0f} / {w_c:.0f}")
        report.append({"batch": batch, "large_alone_tok_s": alone, "composition_tok_s": comp,
                       "ratio": comp / alone, "ratio_per_repeat": paired,
                       "library_forwards_tok_s": library,
                       "library_forwards_ratio": library / alone, "peak_rss_mb_large": peak_a,
                       "peak_rss_mb_composition": peak_c, "weights_mb_large": w_a,
                       "weights_mb_composition": w_c})
    console.print(table)
    out = HERE / "results" / "engine.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"parameters": sizes, "results": report}, indent=2))
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
