"""The FoMo-in-Flux bar on a built continual world, at one seed: the `compare` of finetune, lora,
ewc, ema-merge, zs-merge and joint (timed), then fine-tuning without replay, then (with
--extra, alone) the reported comparisons: DoRA and VeRA, the meta schedule, fine-tuning and
EMA-merge without pretraining replay (mix 0,0.5,0.5), two orderings.

    PYTHONPATH=src python bench/continual_bars.py --world DIR --seed 0 --out bench-out/seed0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from emulate.common.cli import quiet_transformers
from emulate.continual.commands import compare_methods, markdown_table
from emulate.continual.plots import trajectory_plot

COMPARE = ["finetune", "lora", "ewc", "ema-merge", "zs-merge", "joint"]
OPTIONS = dict(
    ordering="random",
    tasks=10,
    mix="0.3334,0.3333,0.3333",
    schedule="restart",
    steps=None,
    merge="interpolation",
    merge_weight=0.5,
)


def bars(r: dict, noreplay: dict) -> list[tuple[str, float, bool]]:
    ft, start = r["finetune"], r["finetune"]["start"]
    stream = [m for m in r if m != "joint"]
    lines = [
        ("start ZS >= 0.6", start["zs"], start["zs"] >= 0.6),
        ("start KA <= 0.3", start["ka"], start["ka"] <= 0.3),
        (
            "finetune final KA - start KA >= 0.3",
            ft["final"]["ka"] - start["ka"],
            ft["final"]["ka"] - start["ka"] >= 0.3,
        ),
        (
            "start ZS - finetune(0,1,0) final ZS >= 0.05",
            start["zs"] - noreplay["final"]["zs"],
            start["zs"] - noreplay["final"]["zs"] >= 0.05,
        ),
        (
            "finetune final ZS - finetune(0,1,0) final ZS >= 0.03",
            ft["final"]["zs"] - noreplay["final"]["zs"],
            ft["final"]["zs"] - noreplay["final"]["zs"] >= 0.03,
        ),
        (
            "ema-merge final GM - finetune final GM >= 0",
            r["ema-merge"]["final"]["gm"] - ft["final"]["gm"],
            r["ema-merge"]["final"]["gm"] >= ft["final"]["gm"],
        ),
        (
            "|zs-merge final ZS - start ZS| <= 0.03",
            abs(r["zs-merge"]["final"]["zs"] - start["zs"]),
            abs(r["zs-merge"]["final"]["zs"] - start["zs"]) <= 0.03,
        ),
    ]
    worst = max(r[m]["final"]["ka"] for m in stream)
    lines.append(
        (
            "joint KA - max stream final KA >= -0.02",
            r["joint"]["final"]["ka"] - worst,
            r["joint"]["final"]["ka"] >= worst - 0.02,
        )
    )
    spread = max(abs(x["mafs_per_task"] / ft["mafs_per_task"] - 1) for x in r.values())
    lines.append(("max |MAFs/task vs finetune - 1| <= 0.05", spread, spread <= 0.05))
    lines.append(
        (
            "lora steps - finetune steps > 0",
            r["lora"]["steps_per_task"] - ft["steps_per_task"],
            r["lora"]["steps_per_task"] > ft["steps_per_task"],
        )
    )
    return lines


def extras(world: Path, out: Path, opts: dict) -> dict:
    """The reported comparisons: DoRA and VeRA (LoRA and full fine-tuning are in the bar run),
    the meta schedule, fine-tuning against EMA-merge without pretraining replay, and two
    orderings besides random."""
    report = {}
    r = compare_methods(world, ["dora", "vera"], out / "peft", False, **opts)
    report["methods"] = {
        m: {"final": x["final"], "steps": x["steps_per_task"]} for m, x in r.items()
    }
    report["meta"] = compare_methods(
        world, ["finetune"], out / "meta", False, **{**opts, "schedule": "meta"}
    )["finetune"]["final"]
    # no pretraining replay, buffer kept: how much the replay sample anchors
    r = compare_methods(
        world,
        ["finetune", "ema-merge"],
        out / "no-pretraining-replay",
        False,
        **{**opts, "mix": "0,0.5,0.5"},
    )
    report["mix 0,0.5,0.5"] = {m: x["final"] for m, x in r.items()}
    report["orderings"] = {}
    for ordering in ("frequency", "similarity"):
        r = compare_methods(
            world, ["finetune"], out / ordering, False, **{**opts, "ordering": ordering}
        )
        report["orderings"][ordering] = r["finetune"]["final"]
    return report


def assemble(out: Path, noreplay: dict, seed: int) -> None:
    """Table, plot and bar lines from the methods finished so far (a bar line whose methods
    are missing is left out)."""
    results = {}
    for method in COMPARE:
        path = out / method / "results.json"
        if path.exists():
            results.update(json.loads(path.read_text()))
    results_nr = {**results, "finetune (0,1,0)": noreplay}
    (out / "table.md").write_text(markdown_table(results_nr))
    trajectory_plot(results_nr, out / "trajectory.png", f"random ordering, T=10, seed {seed}")
    print(markdown_table(results_nr))
    full = {m: results.get(m) for m in COMPARE}
    for name, value, ok in bars_available(full, noreplay):
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.4f}")


def bars_available(r: dict, noreplay: dict):
    stand_in = next(x for x in r.values() if x)
    filled = {m: x or {**stand_in, "_missing": True} for m, x in r.items()}
    needs = [
        ("ema-merge", ["ema-merge"]),
        ("zs-merge", ["zs-merge"]),
        ("joint", COMPARE),
        ("MAFs", COMPARE),
        ("lora", ["lora"]),
        ("", ["finetune"]),
    ]
    for line in bars(filled, noreplay):
        wanted = next((m for key, m in needs if key in line[0]), [])
        if all(r.get(m) for m in wanted):
            yield line


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extra", action="store_true", help="only the reported comparisons")
    parser.add_argument(
        "--assemble",
        type=Path,
        help="a `run --mix 0,1,0 --json` output: "
        "assemble the bar from the per-method results already in --out",
    )
    args = parser.parse_args()
    if args.assemble:
        assemble(args.out, json.loads(args.assemble.read_text()), args.seed)
        return
    quiet_transformers()
    torch.set_num_threads(1)
    opts = {**OPTIONS, "seed": args.seed}
    if args.extra:
        report = extras(args.world, args.out, opts)
        (args.out / "extra.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report, indent=1))
        return
    started, results = time.time(), {}
    for method in COMPARE:  # one at a time, so that each result shows as soon as it is done
        results.update(compare_methods(args.world, [method], args.out / method, False, **opts))
        print(method, results[method]["start"], results[method]["final"], flush=True)
    compare_seconds = time.time() - started
    trajectory_plot(
        results, args.out / "trajectory.png", f"random ordering, T=10, seed {args.seed}"
    )
    (noreplay,) = compare_methods(
        args.world, ["finetune"], args.out / "noreplay", False, **{**opts, "mix": "0,1,0"}
    ).values()
    report = {
        "compare_seconds": round(compare_seconds, 1),
        "table": markdown_table(results),
        "bars": [(n, round(v, 4), ok) for n, v, ok in bars(results, noreplay)],
    }
    (args.out / "bars.json").write_text(json.dumps(report, indent=1))
    for name, value, ok in report["bars"]:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.4f}")
    print(f"compare of {', '.join(COMPARE)}: {compare_seconds:.0f} s")
    print(report["table"])


if __name__ == "__main__":
    main()
