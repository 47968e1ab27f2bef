"""Exact evaluation on held-out scenes: accuracy and tool-use metrics, fine and coarse apart.

Modes change only what a call returns: ``own`` executes the model's calls; ``withheld`` answers
each call with an error instead of the image (does the inserted image matter?); ``random`` moves
the call's window to a random place of the same size; ``oracle`` puts it on the target's cell
(the upper bound of grounding). A call is *valid* when it parses and executes; a crop *contains*
the target when the region of the original it shows holds the whole tile. ``box_iou50`` is the
share of questions whose first call executed and showed a region of the original with IoU >= 0.5
against the target's box (a question with no call, or whose first call failed, counts as a miss);
``answered`` the share of questions the trace answers at all.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from emulate.vision import chains
from emulate.vision.runtime import Trace, run
from emulate.vision.scenes import Question, Tile
from emulate.vision.tools import SCALE, ToolCall, contains

MODES = ("own", "withheld", "random", "oracle")
KINDS = ("fine", "coarse")


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def oracle_box(target) -> list[int]:
    """The box the oracle puts a call on: the tile's cell, or an object's tight extent."""
    if isinstance(target, Tile):
        return chains.cell_box(target.row, target.col)
    from emulate.vision.object_chains import box_of

    return box_of(target.box)


def intervention(mode: str, question: Question, rng: random.Random):
    """The runtime hook of a mode (None for ``own``)."""
    if mode == "own":
        return None
    if mode == "withheld":
        return lambda call, observations: None
    target = question.target

    def replace(call: ToolCall, observations) -> ToolCall:
        arguments = dict(call.arguments)
        if call.name in ("focus_area", "zoom_in") and _numbers(arguments.get("box"), 4):
            x0, y0, x1, y1 = arguments["box"]
            if mode == "oracle":
                arguments["box"], arguments["source"] = oracle_box(target), 0
            else:
                w, h = max(1, x1 - x0), max(1, y1 - y0)
                left, top = rng.randint(0, max(0, SCALE - w)), rng.randint(0, max(0, SCALE - h))
                arguments["box"] = [left, top, min(SCALE, left + w), min(SCALE, top + h)]
        elif call.name == "zoom_in" and _numbers(arguments.get("point"), 2):
            if mode == "oracle":
                x0, y0, x1, y1 = oracle_box(target)
                arguments["point"] = [(x0 + x1) // 2, (y0 + y1) // 2]
                arguments["source"] = 0
            else:
                arguments["point"] = [rng.randint(0, SCALE), rng.randint(0, SCALE)]
        return ToolCall(call.name, arguments)

    if mode in ("random", "oracle"):
        return replace
    raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")


def _numbers(values, n: int) -> bool:
    return isinstance(values, list) and len(values) == n and all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in values
    )


def score(traces: list[tuple[Trace, Question]]) -> dict:
    """The metrics of one kind of question."""
    attempts = valid = crops = inside = answered_plain = right = answered = grounded = 0
    for trace, question in traces:
        right += trace.answer == question.answer
        answered += trace.answer is not None
        tried = [s for s in trace.steps if "<tool_call>" in s.reply or s.call is not None]
        first = tried[0] if tried else None
        if first is not None and first.observation is not None and first.call["name"] != "reuse":
            region = trace.observations[first.observation].region
            grounded += box_iou(region, question.target.box) >= 0.5
        attempts += len(tried)
        valid += sum(1 for s in tried if s.call is not None and not _failed(s))
        answered_plain += not tried and trace.answer is not None
        for step in tried:
            if step.observation is not None and step.call["name"] != "reuse":
                crops += 1
                region = trace.observations[step.observation].region
                inside += contains(region, question.target.box)
    n = len(traces)
    return {
        "accuracy": right / n if n else 0.0,
        "chance": sum(1 / len(q.choices) for _, q in traces) / n if n else 0.0,
        "valid_calls": valid / attempts if attempts else None,
        "containment": inside / crops if crops else None,
        "calls_per_question": attempts / n if n else 0.0,
        "without_calls": answered_plain / n if n else 0.0,
        "answered": answered / n if n else 0.0,
        "box_iou50": grounded / n if n else 0.0,
        "n": n,
    }


def _failed(step) -> bool:
    """A call that did not execute (its error is not the withheld-image notice)."""
    return step.error is not None and "withheld" not in step.error and step.observation is None


def evaluate(
    generate: Callable,
    seed: int,
    n: int,
    mode: str = "own",
    max_calls: int = 4,
    to_normalized=None,
    progress: Callable[[int, int], None] | None = None,
    world: str = "tiles",
) -> dict:
    """``{"fine": metrics, "coarse": metrics}`` on ``n`` held-out questions of each kind."""
    from emulate.vision.dataset import world_parts

    questions = world_parts(world)[0]
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    result, done = {}, 0
    for kind in KINDS:
        traces = []
        for index, (scene, question) in enumerate(questions(seed, "eval", n, kind)):
            rng = random.Random(f"eval-{seed}-{kind}-{index}-{mode}")
            trace = run(
                generate,
                scene.render(),
                question.text,
                max_calls=max_calls,
                intervene=intervention(mode, question, rng),
                to_normalized=to_normalized,
            )
            traces.append((trace, question))
            done += 1
            if progress:
                progress(done, 2 * n)
        result[kind] = score(traces)
    return result
