"""Tables, JSON and the plot of bench_speculative.py's measurements."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


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


def report(results, setups, args, console, kinds, out_dir: Path) -> None:
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
                row = {kind: best(results, label=kind, **where) for kind in kinds}
                alone, lock, spec, plain = (row[k]["tokens_per_s"] for k in kinds[:4])
                over_lock = paired(results, "speculative", "lockstep", **where)
                over_large = paired(results, "speculative", "large_alone", **where)
                item = {**where,
                        **{f"{k}_tok_s": row[k]["tokens_per_s"] for k in kinds},
                        **{f"{k}_median_tok_s": row[k]["median_tokens_per_s"] for k in kinds},
                        "speculative_over_lockstep": spec / lock,
                        "speculative_over_lockstep_paired": over_lock,
                        "speculative_over_large": spec / alone,
                        "speculative_over_large_paired": over_large,
                        "no_lookup_over_lockstep": plain / lock,
                        "no_lookup_over_lockstep_paired": paired(
                            results, "speculative_no_lookup", "lockstep", **where),
                        "acceptance": row["speculative"]["acceptance"],
                        "draft_forwards_per_token": {
                            k: row[k]["draft_forwards_per_token"] for k in kinds[2:]},
                        "peak_rss_mb": {k: row[k]["peak_rss_mb"] for k in kinds}}
                summary.append(item)
                table.add_row(name, f"{temperature:g}", str(batch), f"{alone:.1f}", f"{lock:.1f}",
                              f"{spec:.1f}", f"{spec / lock:.2f}x",
                              f"{statistics.median(over_lock):.2f}x", f"{spec / alone:.2f}x",
                              f"{statistics.median(over_large):.2f}x", f"{plain / lock:.2f}x",
                              f"{item['acceptance']:.2f}",
                              " / ".join(f"{v:.2f}" for v in
                                         item["draft_forwards_per_token"].values()),
                              " / ".join(f"{row[k]['peak_rss_mb']:.0f}" for k in kinds[:3]))
    console.print(table)
    console.print(interleaved_table(results, args, summary, kinds))
    sweep = Table(title=f"Batch 1, greedy, interleaved in one process per setup, "
                        f"{args.repeats} passes: median")
    for column in ("setup", "configuration", "tok/s", "vs lockstep (paired)", "acceptance",
                   "draft fwd/token"):
        sweep.add_column(column, justify="right")
    variants = {}
    for name in setups:
        runs = [r for r in results if r["setup"] == name and r.get("sweep")]
        for label in dict.fromkeys(r["label"] for r in runs):
            mine = [r for r in runs if r["label"] == label]
            found = {field: statistics.median(r[field] for r in mine)
                     if mine[0][field] is not None else None
                     for field in ("tokens_per_s", "acceptance", "draft_forwards_per_token")}
            ratio = 1.0 if label == "lockstep (sweep)" else statistics.median(
                paired(runs, label, "lockstep (sweep)"))
            variants.setdefault(name, {})[label] = {
                "tok_s": found["tokens_per_s"], "over_lockstep": ratio,
                "acceptance": found["acceptance"],
                "draft_forwards_per_token": found["draft_forwards_per_token"]}
            speculative = found["acceptance"] is not None
            sweep.add_row(name, label, f"{found['tokens_per_s']:.1f}", f"{ratio:.2f}x",
                          f"{found['acceptance']:.2f}" if speculative else "",
                          f"{found['draft_forwards_per_token']:.2f}" if speculative else "")
    console.print(sweep)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "speculative.json"
    out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats,
                               "clock": args.clock,
                               "summary": summary, "batch1_greedy": variants,
                               "measurements": results}, indent=1))
    plot(variants, args.ks, out_dir / "speculative_k.png", args.clock)
    console.print(f"wrote {out} and {out_dir / 'speculative_k.png'}")


def report_interleaved(results, setups, args, console, kinds, out_dir: Path) -> None:
    """Only the interleaved ratios (`--interleaved-only`), printed and saved as JSON."""
    summary = [{"setup": name, "temperature": t, "batch": batch}
               for name in setups for t in (0.0, 1.0) for batch in args.batches]
    console.print(interleaved_table(results, args, summary, kinds))
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / ("speculative_interleaved"
                     + ("_natural_ends" if args.natural_ends else "") + ".json")
    out.write_text(json.dumps({"natural_ends": args.natural_ends, "passes": args.passes,
                               "clock": args.clock, "summary": summary,
                               "measurements": results}, indent=1))
    console.print(f"wrote {out}")


def interleaved_table(results, args, summary, kinds):
    """The ratios measured with the systems taking turns in one process (see
    measure_interleaved): per pass, then their median; added to `summary`."""
    from rich.table import Table

    table = Table(title=f"Interleaved in one process, {args.passes} passes: ratios of tokens per "
                        f"{args.clock} second, median (per pass)")
    for column in ("setup", "T", "batch", "spec/lockstep", "spec/large", "no lookup/lockstep",
                   "no lookup/large", "stop/lockstep", "acceptance", "draft fwd/token"):
        table.add_column(column, justify="right")
    for item in summary:
        where = {k: item[k] for k in ("setup", "temperature", "batch")}

        cells = []
        for key, a, b in (("speculative_over_lockstep", "speculative", "lockstep"),
                          ("speculative_over_large", "speculative", "large_alone"),
                          ("no_lookup_over_lockstep", "speculative_no_lookup", "lockstep"),
                          ("no_lookup_over_large", "speculative_no_lookup", "large_alone"),
                          ("stop_over_lockstep", "speculative_stop", "lockstep")):
            found = paired(results, f"{a} (interleaved)", f"{b} (interleaved)", **where)
            item[f"{key}_interleaved"] = found
            cells.append(f"{statistics.median(found):.2f}x ("
                         + ", ".join(f"{v:.2f}" for v in found) + ")")
        runs = {kind: [r for r in results if r["label"] == f"{kind} (interleaved)"
                       and all(r[k] == v for k, v in where.items())] for kind in kinds[2:]}

        medians = {field: " / ".join(f"{statistics.median(r[field] for r in runs[k]):.2f}"
                                     for k in kinds[2:])
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
