"""Chain synthesis: write observe-reason-act chains, execute them, verify, keep the verified.

An annotator policy plays the assistant inside the very loop models run in (``runtime.run``):
it asks for the target's cell (missing it by one cell, or writing a broken call, now and then, as
any writer of chains would), reads each observation the way the encoder sees it (shrunk to its
input, then read pixel-exactly), and answers from what it read. A chain is kept only if every call
parsed and ran, the last observation contains the target, and the answer is right. Recovery
chains miss on purpose and then correct themselves; repair chains write a broken call first
(an empty box, unbalanced JSON), read the runtime's error and call again, so a model that slips
learns to read the error rather than to derail; coarse questions are answered directly. The
deliberate mistake is the one turn a chain may get wrong, and it is trained without loss.
"""

from __future__ import annotations

import random

from PIL import Image

from emulate.vision import chains
from emulate.vision.runtime import Trace, run
from emulate.vision.scenes import CODES, ENCODER_SIDE, GRID, Question, Scene, read_code
from emulate.vision.tools import Observation, contains

FINE_RECIPES = (
    "direct",
    "focus_area",
    "zoom_in",
    "reuse",
    "recovery-focus_area",
    "recovery-zoom_in",
    "recovery-all",
    "repair-focus_area",
    "repair-zoom_in",
    "repair-reuse",
)
MISS_RATE = 0.2
MALFORMED_RATE = 0.03


def encoder_view(observation: Observation) -> Image.Image:
    """The observation at the encoder's size through an exact box filter: the chain writer's
    test of what the view can show (the processor's bilinear shrink blurs edges a little more)."""
    return observation.image.resize((ENCODER_SIDE, ENCODER_SIDE), Image.BOX)


def tile_in_view(scene: Scene, observation: Observation):
    inside = [t for t in scene.tiles if contains(observation.region, t.box)]
    return inside[0] if len(inside) == 1 else None


def annotator(scene: Scene, question: Question, recipe: str, rng: random.Random):
    """The chain writer for one recipe, as a ``generate(messages, observations)`` function."""
    target = question.target
    tool = recipe.removeprefix("recovery-").removeprefix("repair-")
    first_tool = "focus_area" if tool == "all" else tool
    turn = [0]

    def neighbour() -> tuple[int, int]:
        options = [
            (target.row + dr, target.col + dc)
            for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0))
            if 0 <= target.row + dr < GRID and 0 <= target.col + dc < GRID
        ]
        return rng.choice(options)

    def generate(messages: list[dict], observations: list[Observation]) -> str:
        turn[0] += 1
        if recipe == "direct":
            return chains.direct(question)
        recovering = recipe.startswith("recovery-")
        if recipe.startswith("repair-"):
            call = chains.look_call(tool, target.row, target.col)
            if turn[0] == 1:
                return broken(chains.before_call(question, call), call, rng)
            if turn[0] == 2:
                return chains.after_error(question, call)
        if turn[0] == 1:
            missed = recovering or (tool != "reuse" and rng.random() < MISS_RATE)
            row, col = neighbour() if missed else (target.row, target.col)
            text = chains.before_call(question, chains.look_call(first_tool, row, col))
            if not recovering and rng.random() < MALFORMED_RATE:
                text = unbalanced(text)  # a slip of the pen
            return text
        last_was_image = messages[-1]["content"][-1]["type"] == "image"
        if last_was_image:
            code = read_code(encoder_view(observations[-1]), target.colour)
            if code is not None:
                return chains.after_observation(question, tile_in_view(scene, observations[-1]))
            if recovering and turn[0] <= 3:
                retry = chains.look_call(first_tool, target.row, target.col)
                seen = tile_in_view(scene, observations[-1])
                if recipe == "recovery-all" and turn[0] == 2:
                    return chains.after_miss(question, seen, chains.look_call("reuse", 0, 0))
                if recipe == "recovery-all":
                    return chains.before_call(question, retry)
                return chains.after_miss(question, seen, retry)
        return f"I see no tile clearly. {chains.answer(rng.choice(CODES))}"

    return generate


def broken(text: str, call, rng: random.Random) -> str:
    """A call as a hurried writer breaks it: the box's last corner on its first, or a brace lost."""
    box = call.arguments.get("box")
    if box is not None and rng.random() < 0.5:
        return text.replace(str(box), str([box[0], box[1], box[2], box[1]]), 1)
    return unbalanced(text)


def unbalanced(text: str) -> str:
    """The call's JSON with a closing brace lost."""
    return text.replace("}}", "}", 1)


def verify(trace: Trace, question: Question, allowed_errors: int = 0) -> str | None:
    """Why a chain is rejected, or None when it is kept (``allowed_errors``: first turns whose
    error is the chain's deliberate mistake)."""
    if any(step.error for step in trace.steps[allowed_errors:]):
        return "malformed_call"
    if allowed_errors and not all(step.error for step in trace.steps[:allowed_errors]):
        return "malformed_call"
    if trace.answer is None:
        return "no_answer"
    seen = [s.observation for s in trace.steps if s.observation is not None]
    if seen and not contains(trace.observations[seen[-1]].region, question.target.box):
        return "not_contained"
    if trace.answer != question.answer:
        return "wrong_answer"
    return None


def synthesize(scene: Scene, question: Question, recipe: str, rng: random.Random):
    """Execute one recipe's chain through the runtime; (trace, rejection reason or None)."""
    trace = run(annotator(scene, question, recipe, rng), scene.render(), question.text)
    return trace, verify(trace, question, allowed_errors=int(recipe.startswith("repair-")))


def conversation(trace: Trace) -> list[dict]:
    """The trace as chat messages (TRL's format: typed content parts, images in order)."""
    messages = [_user(trace.question, image=True)]
    for step in trace.steps:
        messages.append({"role": "assistant", "content": [_text(step.reply)]})
        if step.observation is not None:
            messages.append(_user(f"Observation {step.observation}.", image=True))
        elif step.error is not None:
            messages.append(_user(step.error, image=False))
    return messages


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


def _user(text: str, image: bool) -> dict:
    parts = [{"type": "image", "text": None}] if image else []
    return {"role": "user", "content": [_text(text)] + parts}
