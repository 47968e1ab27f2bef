"""The observe -> reason -> act loop: generate until a call or an answer, execute, continue.

The loop is model-agnostic: an adapter turns the conversation into the model's inputs and back
(``adapters.py``). Every way a turn can go wrong (a malformed call, an unknown tool, a bad box,
an unknown source, a reply with neither call nor answer) becomes an error observation the model
reads as the next user turn; past ``max_calls`` calls, or ``max_turns`` turns, the trace stops
with no answer. Evaluation modes intervene on executed calls (withhold the image, move the box
at random, or put it on the ground truth) through ``intervene``.

Replies are read in a call format (``formats.py``): ``parse`` when given, else the generator's
own ``parse`` (an adapter's, in its checkpoint's format), else the project's grammar. The call
and turn caps are bounded (``MAX_CALLS``, ``MAX_TURNS``): a model's output never buys unbounded
work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from emulate.common.errors import EmulateError
from emulate.vision.formats import pixels_to_normalized
from emulate.vision.tools import Observation, Reply, ToolCall, ToolError, execute, parse_reply

MAX_CALLS = 32  # DeepEyes allows 10 calls at evaluation, Mini-o3 12
MAX_TURNS = 64

WITHHELD = "error: the observation is withheld; answer from what you have seen."


@dataclass
class Step:
    """One assistant turn; ``error`` is the error observation the model read after it (or, at
    the call cap, why the trace stopped there)."""

    reply: str
    call: dict | None = None
    error: str | None = None
    observation: int | None = None  # index into Trace.observations


@dataclass
class Trace:
    question: str
    observations: list[Observation]
    steps: list[Step] = field(default_factory=list)
    answer: str | None = None
    stopped: str = ""  # "answer", "call_cap", "turn_cap", "context"

    @property
    def calls(self) -> list[Step]:
        return [s for s in self.steps if s.call is not None]

    def to_dict(self) -> dict:
        return {
            "question": self.question,
            "answer": self.answer,
            "stopped": self.stopped,
            "steps": [vars(s) for s in self.steps],
            "regions": [list(o.region) for o in self.observations],
        }


def user_turn(text: str, image: bool) -> dict:
    """The text first, then the image: every image token can then read what is asked."""
    content = [{"type": "text", "text": text}] + ([{"type": "image"}] if image else [])
    return {"role": "user", "content": content}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def observation_text(index: int) -> str:
    return f"Observation {index}."


class ContextError(EmulateError, ValueError):
    """A conversation longer than the model's context (raised by a generator)."""


class LimitError(EmulateError, ValueError):
    """A call or turn cap outside what the runtime allows."""


def check_caps(max_calls: int, max_turns: int | None) -> tuple[int, int]:
    """(max_calls, max_turns), the turn cap defaulting to max_calls + 2; or a LimitError."""
    if isinstance(max_calls, bool) or not isinstance(max_calls, int):
        raise LimitError(f"max_calls must be an integer, got {max_calls!r}")
    if not 0 <= max_calls <= MAX_CALLS:
        raise LimitError(f"max_calls {max_calls} is out of range: give 0 to {MAX_CALLS}")
    max_turns = max_turns if max_turns is not None else max_calls + 2
    if isinstance(max_turns, bool) or not isinstance(max_turns, int):
        raise LimitError(f"max_turns must be an integer, got {max_turns!r}")
    if not 1 <= max_turns <= MAX_TURNS:
        raise LimitError(f"max_turns {max_turns} is out of range: give 1 to {MAX_TURNS}")
    return max_calls, max_turns


Intervention = Callable[[ToolCall, list[Observation]], ToolCall | None]


def run(
    generate: Callable[[list[dict], list[Observation]], str],
    image: Image.Image,
    question: str,
    max_calls: int = 4,
    max_turns: int | None = None,
    intervene: Intervention | None = None,
    to_normalized: Callable[[ToolCall, Image.Image, str], ToolCall] | None = None,
    parse: Callable[[str], Reply] | None = None,
) -> Trace:
    """Drive ``generate(messages, observations) -> reply text`` until an answer or a cap.

    ``intervene`` may replace a parsed call before it runs, or return None to withhold its image;
    ``to_normalized(call, source, units)`` maps a family's coordinates (e.g. absolute pixels)
    to 0-1000; without it, pixel units are read as pixels of the source image itself.
    """
    max_calls, max_turns = check_caps(max_calls, max_turns)
    parse = parse or getattr(generate, "parse", parse_reply)
    width, height = image.size
    trace = Trace(question, [Observation(image, (0.0, 0.0, float(width), float(height)))])
    messages = [user_turn(question, image=True)]
    while len(trace.steps) < max_turns:
        try:
            text = generate(messages, trace.observations)
        except ContextError:
            if not trace.steps:
                raise  # the question alone is too long: the caller's error
            trace.stopped = "context"
            return trace
        reply = parse(text)
        step = Step(text)
        trace.steps.append(step)
        messages.append(assistant_turn(text))
        if reply.answer is not None:
            trace.answer, trace.stopped = reply.answer, "answer"
            return trace
        if reply.call is None:
            step.error = f"error: {reply.error}"
            messages.append(user_turn(step.error, image=False))
            continue
        step.call = {"name": reply.call.name, "arguments": reply.call.arguments}
        if len(trace.calls) > max_calls:
            step.error = f"error: more than {max_calls} tool calls"
            trace.stopped = "call_cap"
            return trace
        outcome = _execute(reply.call, reply.units, trace, intervene, to_normalized)
        if isinstance(outcome, str):
            step.error = outcome
            messages.append(user_turn(outcome, image=False))
            continue
        trace.observations.append(outcome)
        step.observation = len(trace.observations) - 1
        messages.append(user_turn(observation_text(step.observation), image=True))
    trace.stopped = "turn_cap"
    return trace


def _execute(call, units, trace, intervene, to_normalized) -> Observation | str:
    """The observation a call yields, or the error text the model reads instead."""
    try:
        source = call.arguments.get("source", 0)
        if isinstance(source, int) and 0 <= source < len(trace.observations):
            image = trace.observations[source].image
            if to_normalized is not None:
                call = to_normalized(call, image, units)
            elif units == "pixels":
                call = pixels_to_normalized(call, image.width, image.height)
        if intervene is not None:
            replaced = intervene(call, trace.observations)
            if replaced is None:
                execute(call, trace.observations)  # a bad call still reads as its own error
                return WITHHELD
            call = replaced
        return execute(call, trace.observations)
    except ToolError as exc:
        return f"error: {exc}"
