"""The observe -> reason -> act loop: generate until a call or an answer, execute, continue.

The loop is model-agnostic: an adapter turns the conversation into the model's inputs and back
(``adapters.py``). Every way a turn can go wrong (a malformed call, an unknown tool, a bad box,
an unknown source, a reply with neither call nor answer) becomes an error observation the model
reads as the next user turn; past ``max_calls`` calls, or ``max_turns`` turns, the trace stops
with no answer. Evaluation modes intervene on executed calls (withhold the image, move the box
at random, or put it on the ground truth) through ``intervene``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from emulate.vision.tools import Observation, ToolCall, ToolError, execute, parse_reply

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
    stopped: str = ""  # "answer", "call_cap", "turn_cap"

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


Intervention = Callable[[ToolCall, list[Observation]], ToolCall | None]


def run(
    generate: Callable[[list[dict], list[Observation]], str],
    image: Image.Image,
    question: str,
    max_calls: int = 4,
    max_turns: int | None = None,
    intervene: Intervention | None = None,
    to_normalized: Callable[[ToolCall, Image.Image], ToolCall] | None = None,
) -> Trace:
    """Drive ``generate(messages, observations) -> reply text`` until an answer or a cap.

    ``intervene`` may replace a parsed call before it runs, or return None to withhold its image;
    ``to_normalized`` maps a family's coordinates (e.g. absolute pixels) to 0-1000.
    """
    width, height = image.size
    trace = Trace(question, [Observation(image, (0.0, 0.0, float(width), float(height)))])
    messages = [user_turn(question, image=True)]
    max_turns = max_turns if max_turns is not None else max_calls + 2
    while len(trace.steps) < max_turns:
        text = generate(messages, trace.observations)
        reply = parse_reply(text)
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
        outcome = _execute(reply.call, trace, intervene, to_normalized)
        if isinstance(outcome, str):
            step.error = outcome
            messages.append(user_turn(outcome, image=False))
            continue
        trace.observations.append(outcome)
        step.observation = len(trace.observations) - 1
        messages.append(user_turn(observation_text(step.observation), image=True))
    trace.stopped = "turn_cap"
    return trace


def _execute(call, trace, intervene, to_normalized) -> Observation | str:
    """The observation a call yields, or the error text the model reads instead."""
    try:
        if to_normalized is not None:
            source = call.arguments.get("source", 0)
            if isinstance(source, int) and 0 <= source < len(trace.observations):
                call = to_normalized(call, trace.observations[source].image)
        if intervene is not None:
            replaced = intervene(call, trace.observations)
            if replaced is None:
                execute(call, trace.observations)  # a bad call still reads as its own error
                return WITHHELD
            call = replaced
        return execute(call, trace.observations)
    except ToolError as exc:
        return f"error: {exc}"
