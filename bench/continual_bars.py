"""The FoMo-in-Flux bar on a built continual world, at one seed: the `compare` of finetune, lora,
ewc, ema-merge, zs-merge and joint (timed), then fine-tuning without replay, then (with
--extra) the reported comparisons: DoRA / VeRA / BitFit / LNFit / SI / FT-merge, the meta and
rsqrt schedules, and every ordering. Prints every bar line with its measured figure.

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--extra", action="store_true")
    args = parser.parse_args()
    quiet_transformers()
    torch.set_num_threads(1)
    opts = {**OPTIONS, "seed": args.seed}
    started = time.time()
    results = compare_methods(args.world, COMPARE, args.out / "compare", False, **opts)
    compare_seconds = time.time() - started
    (noreplay,) = compare_methods(
        args.world, ["finetune"], args.out / "noreplay", False, **{**opts, "mix": "0,1,0"}
    ).values()
    report = {
        "compare_seconds": round(compare_seconds, 1),
        "bars": [(n, round(v, 4), ok) for n, v, ok in bars(results, noreplay)],
    }
    if args.extra:
        extra = compare_methods(
            args.world,
            ["dora", "vera", "bitfit", "lnfit", "si", "ft-merge"],
            args.out / "peft",
            False,
            **opts,
        )
        report["methods"] = markdown_table({**results, **extra})
        for schedule in ("meta", "rsqrt"):
            r = compare_methods(
                args.world,
                ["finetune"],
                args.out / schedule,
                False,
                **{**opts, "schedule": schedule},
            )
            report[schedule] = r["finetune"]["final"]
        report["orderings"] = {}
        for ordering in ("frequency", "frequency-reverse", "performance", "similarity", "dataset"):
            r = compare_methods(
                args.world,
                ["finetune"],
                args.out / ordering,
                False,
                **{**opts, "ordering": ordering},
            )
            report["orderings"][ordering] = r["finetune"]["final"]
    (args.out / "bars.json").write_text(json.dumps(report, indent=1))
    for name, value, ok in report["bars"]:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {value:.4f}")
    print(f"compare of {', '.join(COMPARE)}: {compare_seconds:.0f} s")


if __name__ == "__main__":
    main()
