"""Means and 95% intervals over seeds where the world is seeded too: `compare --seeds` holds one
world and varies the stream, so this reads one `compare` per world (world seed = stream seed),
summarises every method with `intervals.summarize_seeds`, prints a markdown table (mean [low,
high]) and, for every pair of methods and every final metric, whether the intervals separate.
With --figure, the seed's matrix heat maps beside its KA-ZS trajectory in one picture.

    emulate continual build --out W/s0 --size default --seed 0   # and 1, 2
    emulate continual compare --world W/s0 --methods M --seed 0 --out C/s0 --json   # and 1, 2
    python bench/continual_seeds.py --runs C/s0/seed0 C/s1/seed1 C/s2/seed2
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from emulate.continual.intervals import separated, summarize_seeds, t_interval
from emulate.continual.metrics import gm

FINAL = ("final.ka", "final.zs", "final.gm")


def load(dirs: list[Path]) -> dict[str, list[dict]]:
    """Per method, its result at every run directory (methods missing from any run dropped)."""
    results = [json.loads((d / "results.json").read_text()) for d in dirs]
    methods = [m for m in results[0] if all(m in r for r in results)]
    return {m: [r[m] for r in results] for m in methods}


def cell(i: dict) -> str:
    return f"{i['mean']:.3f} [{i['low']:.3f}, {i['high']:.3f}]"


def table(runs: dict[str, list[dict]], keys=FINAL) -> str:
    """Markdown: per method the start (mean over runs), then mean [95% interval] per key."""
    summary = summarize_seeds(runs)
    first = next(iter(runs.values()))  # the start is the world's: the same for every method
    start = {k: t_interval([r["start"][k] for r in first]) for k in ("ka", "zs")}
    start["gm"] = t_interval([gm(r["start"]["ka"], r["start"]["zs"]) for r in first])
    head = "| method | " + " | ".join(k.replace("final.", "final ") for k in keys)
    lines = [head + " | steps/task |", "|---" + "|---:" * (len(keys) + 1) + "|"]
    lines.append("| start (zero-shot) | " + " | ".join(
        cell(start[k.split(".")[-1]]) if k.startswith("final.") else "" for k in keys
    ) + " | |")
    for m, s in summary.items():
        steps = sorted({r["steps_per_task"] for r in runs[m]})
        lines.append(f"| {m} | " + " | ".join(cell(s[k]) for k in keys)
                     + f" | {'/'.join(map(str, steps))} |")
    return "\n".join(lines)


def separations(runs: dict[str, list[dict]], keys=FINAL) -> list[str]:
    """One line per pair and key whose intervals do not overlap."""
    summary = summarize_seeds(runs)
    lines = []
    for a, b in itertools.combinations(summary, 2):
        for k in keys:
            x, y = summary[a][k], summary[b][k]
            if separated(x, y):
                hi, lo = (a, b) if x["mean"] > y["mean"] else (b, a)
                lines.append(f"{k}: {hi} > {lo} ({summary[hi][k]['mean']:.3f} vs "
                             f"{summary[lo][k]['mean']:.3f})")
    return lines


def figure(run: Path, out: Path, title: str) -> None:
    """The run's matrix.png and trajectory.png, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    pictures = [mpimg.imread(run / n) for n in ("matrix.png", "trajectory.png")]
    widths = [p.shape[1] / p.shape[0] for p in pictures]
    fig, axes = plt.subplots(1, 2, figsize=(3.4 * sum(widths), 3.6),
                             gridspec_kw={"width_ratios": widths})
    for ax, p in zip(axes, pictures, strict=True):
        ax.imshow(p)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=Path, nargs="+", required=True,
                        help="compare output folders (each holding results.json), one per seed")
    parser.add_argument("--keys", default=",".join(FINAL))
    parser.add_argument("--json", type=Path, help="write the intervals here")
    parser.add_argument("--figure", type=Path, help="matrix beside trajectory of the first run")
    args = parser.parse_args()
    keys = tuple(args.keys.split(","))
    runs = load(args.runs)
    print(table(runs, keys))
    print()
    for line in separations(runs, keys) or ["no pair separated"]:
        print("separated:", line)
    if args.json:
        args.json.write_text(json.dumps(summarize_seeds(runs), indent=1))
    if args.figure:
        figure(args.runs[0], args.figure, f"{args.runs[0]}: per-task accuracy and KA-ZS path")


if __name__ == "__main__":
    main()
