"""Any checkpoint on a multiple-choice benchmark file: accuracy with a 95% interval, per category.

``direct`` runs the same loop with no calls allowed (a reply that calls stops the trace
unanswered, so it scores as wrong); ``tools`` lets the model call up to ``max_calls`` times, as
``eval`` does. Every item's trace is written as one JSON line, so a score can be audited.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

from emulate.common.errors import EmulateError
from emulate.vision import benchfile
from emulate.vision.images import load_image
from emulate.vision.runtime import check_caps, run

MODES = ("direct", "tools")
Z95 = 1.959963984540054


class BenchError(EmulateError, ValueError):
    """A mode or option the benchmark cannot take."""


def wilson(right: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (sound at 0 and n, unlike the normal one)."""
    if n == 0:
        return 0.0, 1.0
    p = right / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bench(
    generate: Callable,
    items: list[benchfile.Item],
    mode: str,
    max_calls: int = 4,
    to_normalized=None,
    traces: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The metrics of ``generate`` (an adapter) on ``items``; traces to ``traces`` (JSONL)."""
    if mode not in MODES:
        raise BenchError(f"unknown mode {mode!r}; choose direct or tools")
    max_calls, _ = check_caps(0 if mode == "direct" else max_calls, None)
    rows = []
    out = None
    if traces is not None:
        traces.parent.mkdir(parents=True, exist_ok=True)
        out = traces.open("w", encoding="utf-8")
    try:
        for done, item in enumerate(items, 1):
            trace = run(generate, load_image(item.image), item.question, max_calls=max_calls,
                        to_normalized=to_normalized)
            right = benchfile.is_right(trace.answer, item)
            rows.append((item.category, right, trace.answer is not None, len(trace.calls)))
            if out is not None:
                record = {"question_id": item.question_id, "category": item.category,
                          "image": str(item.image), "expected": item.answer, "right": right,
                          **trace.to_dict()}
                out.write(json.dumps(record) + "\n")
            if progress:
                progress(done, len(items))
    finally:
        if out is not None:
            out.close()
    return summary(rows)


def summary(rows: list[tuple[str, bool, bool, int]]) -> dict:
    """(category, right, answered, calls) rows -> the JSON the command prints."""
    n = len(rows)
    right = sum(r[1] for r in rows)
    low, high = wilson(right, n)
    by_category = {}
    for name in sorted({r[0] for r in rows}):
        mine = [r for r in rows if r[0] == name]
        by_category[name] = {"accuracy": sum(r[1] for r in mine) / len(mine), "n": len(mine)}
    return {
        "accuracy": right / n if n else 0.0,
        "low": low,
        "high": high,
        "n": n,
        "answered": sum(r[2] for r in rows) / n if n else 0.0,
        "calls_per_question": sum(r[3] for r in rows) / n if n else 0.0,
        "by_category": by_category,
    }


def bench_file(model: Path, file: Path, mode: str, max_calls: int = 4,
               traces: Path | None = None) -> dict:
    """Load the checkpoint and the file, then ``bench``: the command's whole work."""
    from emulate.vision.adapters import Adapter

    if mode not in MODES:
        raise BenchError(f"unknown mode {mode!r}; choose direct or tools")
    items = benchfile.load(file)
    adapter = Adapter.load(model)
    return bench(adapter, items, mode, max_calls, adapter.to_normalized, traces)
