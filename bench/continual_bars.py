"""The FoMo-in-Flux bar on a built continual world, at one seed: the `compare` of finetune, lora,
ewc, ema-merge, zs-merge and joint (timed), then fine-tuning without replay (mix 0,1,0) and at
budgets 0.25 and 4, and the bar lines of the headroom issue; with --extra (alone) the reported
comparisons: DoRA and VeRA, the meta schedule, fine-tuning and EMA-merge without pretraining
replay (mix 0,0.5,0.5), two orderings.

    emulate continual build --out W --size default --seed 0
    PYTHONPATH=src python bench/continual_bars.py --world W --seed 0 --out bench-out/seed0
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
    merge="interpolate",
    merge_weight=0.5,
)
# the fine-tuning runs beside the compare: without replay, and at a tight and a loose budget
SIDE = {"finetune (0,1,0)": {"mix": "0,1,0"}, "finetune (budget 0.25)": {"budget": 0.25},
        "finetune (budget 4)": {"budget": 4.0}}


def diagonal_gap(r: dict) -> float:
    """The largest gap between a trajectory point's KA and the mean of its matrix row weighted
    by the tasks' test images (equal here: every task holds as many concepts, each as many
    test images)."""
    sizes = [len(t) for t in r["stream"]]
    gaps = [abs(sum(a * n for a, n in zip(row, sizes, strict=True)) / sum(sizes) - p["ka"])
            for row, p in zip(r["matrix"], r["trajectory"], strict=True)]
    return max(gaps)


def bars(r: dict, side: dict) -> list[tuple[str, float, bool]]:
    """(line, measured figure, met) for every bar line of the headroom issue."""
    ft, start = r["finetune"], r["finetune"]["start"]
    ka, zs, gm = (ft["final"][k] for k in ("ka", "zs", "gm"))
    nr, tight, loose = (side[k] for k in SIDE)
    ema = r["ema-merge"]["final"]
    spread = max(abs(x["mafs_per_task"] / ft["mafs_per_task"] - 1) for x in r.values())
    lines = [
        ("start KA - chance <= 0.15", start["ka"] - start["chance"],
         start["ka"] - start["chance"] <= 0.15),
        ("finetune final KA - start KA >= 0.3", ka - start["ka"], ka - start["ka"] >= 0.3),
        ("finetune final KA <= 0.92", ka, ka <= 0.92),
        ("finetune ZS - finetune(0,1,0) ZS >= 0.1", zs - nr["final"]["zs"],
         zs - nr["final"]["zs"] >= 0.1),
        ("ema-merge ZS - finetune ZS >= 0.02", ema["zs"] - zs, ema["zs"] - zs >= 0.02),
        ("ema-merge GM - finetune GM >= 0", ema["gm"] - gm, ema["gm"] >= gm),
        ("finetune KA at budget 4 - at budget 0.25 >= 0.05",
         loose["final"]["ka"] - tight["final"]["ka"],
         loose["final"]["ka"] - tight["final"]["ka"] >= 0.05),
        ("finetune(0,1,0) forgetting >= 0", nr["forgetting"], nr["forgetting"] >= 0),
        ("finetune(0,1,0) forgetting - finetune forgetting > 0",
         nr["forgetting"] - ft["forgetting"], nr["forgetting"] > ft["forgetting"]),
        ("max |matrix row mean - KA| <= 1e-6", max(diagonal_gap(x) for x in r.values()),
         max(diagonal_gap(x) for x in r.values()) <= 1e-6),
        ("max |MAFs/task vs finetune - 1| <= 0.05", spread, spread <= 0.05),
    ]
    for name in ("finetune (budget 0.25)", "finetune (budget 4)"):
        plan = side[name]["budget"]
        lines.append((f"{name}: steps / reference steps", plan["steps"] / plan["reference_steps"],
                      plan["steps"] == plan["reference_steps"]))
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extra", action="store_true", help="only the reported comparisons")
    args = parser.parse_args()
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
    side = {}
    for name, change in SIDE.items():
        (side[name],) = compare_methods(
            args.world, ["finetune"], args.out / name.replace(" ", ""), False,
            **{**opts, **change},
        ).values()
        print(name, side[name]["final"], flush=True)
    report = {
        "compare_seconds": round(compare_seconds, 1),
        "table": markdown_table({**results, **side}),
        "bars": [(n, round(v, 4), ok) for n, v, ok in bars(results, side)],
    }
    (args.out / "bars.json").write_text(json.dumps(report, indent=1))
    for name, value, ok in report["bars"]:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.4f}")
    print(f"compare of {', '.join(COMPARE)}: {compare_seconds:.0f} s")
    print(report["table"])


if __name__ == "__main__":
    main()
