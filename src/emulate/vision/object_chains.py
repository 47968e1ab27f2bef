"""Chains for the objects world: boxes from the target's true extent, read as the family sees.

The annotator plays the assistant inside the runtime's loop (``runtime.run``), as for the tiles
world, but it must find its target: every box it writes is the target's true extent (padded by
``PAD`` pixels), never a grid cell. It reads an observation only as the default family's
processor will show it (``objects.readable``: the whole badge inside the region and at least one
image token wide after the processor's resize), so a small target read through ``focus_area``
is too fine and the chain magnifies it, as a careful writer would.

Recipes: ``direct``; ``focus_area`` / ``zoom_in`` (a tight box; ``focus_area`` falls back to a
zoom when the view is too fine); ``reuse`` (a first look at a look-alike, the original back,
then the target); ``recovery-loose`` (a box three times too big, then a tight one);
``recovery-wrong`` (the box of a look-alike, then the target's); ``repair`` (a broken call, the
runtime's error, the call again); ``withheld`` (the runtime withholds the crop and the chain
answers with a guess, so the model learns to answer rather than derail). Coarse questions are
answered directly from the full view.
"""

from __future__ import annotations

import random

from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from emulate.vision import objects
from emulate.vision.objects import Question, Scene, Thing
from emulate.vision.runtime import WITHHELD, Trace, run
from emulate.vision.synthesis import broken, verify
from emulate.vision.tools import SCALE, Observation, ToolCall

FINE_RECIPES = ("direct", "focus_area", "zoom_in", "reuse", "recovery-loose", "recovery-wrong",
                "repair", "withheld")
PAD = 4  # canvas pixels around the target's extent in a tight box
LOOSE = 3.0  # a loose box's side as a multiple of the target's
FACTOR, MIN_PIXELS, MAX_PIXELS = 28, 28 * 28, 224 * 224  # the default family's processor


def box_of(extent: tuple[float, ...], pad: float = PAD) -> list[int]:
    """A box around an extent of the canvas, in the grammar's 0-1000 coordinates."""
    x0, y0, x1, y1 = extent
    scale = SCALE / objects.CANVAS
    return [max(0, round((x0 - pad) * scale)), max(0, round((y0 - pad) * scale)),
            min(SCALE, round((x1 + pad) * scale)), min(SCALE, round((y1 + pad) * scale))]


def loose_box(thing: Thing) -> list[int]:
    cx, cy = thing.x + thing.side / 2, thing.y + thing.side / 2
    half = thing.side * LOOSE / 2
    return box_of((cx - half, cy - half, cx + half, cy + half), pad=0)


def call(tool: str, box: list[int] | None = None) -> ToolCall:
    if tool == "reuse":
        return ToolCall("reuse", {})
    return ToolCall(tool, {"box": box, "source": 0})


def view_scale(observation: Observation) -> float:
    """View pixels per canvas pixel once the family's processor has resized the observation."""
    width, height = observation.image.size
    _, seen_width = smart_resize(height, width, FACTOR, MIN_PIXELS, MAX_PIXELS)
    region = observation.region
    return seen_width / (region[2] - region[0])


def answer(text: str) -> str:
    return f"<answer>{text}</answer>"


def looking(description: str, tool_call: ToolCall) -> str:
    return f"I look for {description}. {tool_call.to_text()}"


def reads(description: str, code: str) -> str:
    return f"The lines on {description} run {code}. {answer(code)}"


def too_fine(description: str, tool_call: ToolCall) -> str:
    return f"The lines on {description} are too fine here; I look closer. {tool_call.to_text()}"


def not_it(seen: str, description: str, tool_call: ToolCall) -> str:
    return f"This shows {seen}, not {description}. {tool_call.to_text()}"


def crowded(other: str, description: str, tool_call: ToolCall) -> str:
    return f"{other.capitalize()} is in the way; I look closer at {description}. " \
        f"{tool_call.to_text()}"


def failed(description: str, tool_call: ToolCall) -> str:
    return f"The call failed; I look again for {description}. {tool_call.to_text()}"


def guess(code: str) -> str:
    return f"I cannot look closer; I guess. {answer(code)}"


def shown(scene: Scene, observation: Observation, target: Thing) -> str:
    """What the writer says a wrong view shows: the look-alike it holds, or nothing."""
    inside = objects.others_in(scene, observation.region, target)
    return objects.describe(scene, inside[0]) if inside else "no object"


def look_alike(scene: Scene, target: Thing) -> Thing | None:
    """Another object sharing two of the target's looks (or one), for a wrong first look."""
    for shared in (2, 1):
        alike = [t for t in scene.things if t is not target
                 and sum(a == b for a, b in zip(t.looks(), target.looks(), strict=True)) == shared]
        if alike:
            return alike[0]
    return None


def annotator(scene: Scene, question: Question, recipe: str, rng: random.Random):
    """The chain writer for one recipe, as a ``generate(messages, observations)`` function."""
    target, description = question.target, question.description
    tight = box_of(target.box)
    tool = "zoom_in" if recipe == "zoom_in" else "focus_area"
    other = look_alike(scene, target)
    turn = [0]

    def generate(messages: list[dict], observations: list[Observation]) -> str:
        turn[0] += 1
        last = messages[-1]["content"][0]["text"] if len(messages) > 1 else ""
        if recipe == "direct":
            return answer(question.answer)
        if turn[0] == 1:
            if recipe == "repair":
                return broken(looking(description, call(tool, tight)), call(tool, tight), rng)
            if recipe == "recovery-loose":
                return looking(description, call(tool, loose_box(target)))
            if recipe in ("recovery-wrong", "reuse") and other is not None:
                return looking(description, call(tool, box_of(other.box)))
            return looking(description, call(tool, tight))
        if last == WITHHELD:
            return guess(rng.choice(objects.CODES))
        if last.startswith("error:"):
            return failed(description, call(tool, tight))
        seen = observations[-1]
        if seen is observations[0]:  # the original is back: now the target itself
            return looking(description, call(tool, tight))
        crowd = objects.others_in(scene, seen.region, target)
        if crowd and objects.contains_badge(target, seen.region):
            return crowded(objects.describe(scene, crowd[0]), description, call(tool, tight))
        if objects.readable(target, seen.region, view_scale(seen)):
            return reads(description, target.code)
        if objects.contains_badge(target, seen.region):
            return too_fine(description, call("zoom_in", tight))
        if recipe == "reuse":
            return not_it(shown(scene, seen, target), description, call("reuse"))
        return not_it(shown(scene, seen, target), description, call(tool, tight))

    return generate


def withhold(tool_call: ToolCall, observations: list[Observation]) -> ToolCall | None:
    """The runtime hook of the ``withheld`` recipe: every call's image is withheld."""
    return None


def synthesize(scene: Scene, question: Question, recipe: str,
               rng: random.Random) -> tuple[Trace, str | None]:
    """Execute one recipe's chain through the runtime; (trace, rejection reason or None)."""
    hook = withhold if recipe == "withheld" else None
    trace = run(annotator(scene, question, recipe, rng), scene.render(), question.text,
                intervene=hook)
    if recipe == "withheld":
        ok = trace.answer in objects.CODES and all(s.error == WITHHELD for s in trace.calls)
        return trace, None if ok and trace.calls else "wrong_answer"
    if recipe in ("recovery-wrong", "reuse") and look_alike(scene, question.target) is None:
        return trace, "no_look_alike"
    return trace, verify(trace, question, allowed_errors=int(recipe == "repair"))


def skip_turns(recipe: str) -> list[int]:
    """Assistant turns trained without loss: a recipe's deliberate mistake."""
    if recipe in ("repair", "recovery-loose", "recovery-wrong", "reuse"):
        return [0]
    return []
