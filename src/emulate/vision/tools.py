"""The three visual operations and the one call grammar every model speaks.

A reply holds either ``<tool_call>{JSON}</tool_call>`` or ``<answer>...</answer>``. The JSON is
``{"name": TOOL, "arguments": {...}}``; boxes and points are integers in normalized 0-1000
coordinates of the source image (``source`` 0 is the original, ``k`` the k-th observation):

- ``focus_area``: ``{"box": [x0, y0, x1, y1], "source": 0}`` crops exactly that box;
- ``zoom_in``: ``{"box": [x0, y0, x1, y1], "source": 0}`` magnifies that region as far as the
  source's size allows, at most 4x (``"factor"`` sets it: 1 < factor <= 4);
  ``{"point": [x, y], "factor": 4, ...}`` magnifies the square around the point whose side is
  the source's side divided by the factor (2 when not given);
- ``reuse``: ``{}`` puts the original image back into the context.

No observation a call makes holds more than ``MAX_OBSERVATION_PIXELS`` pixels (2048²): a
magnification that would exceed it magnifies less, a larger crop is scaled down, so zoom on
zoom cannot grow without bound.

Anything wrong in a call raises ``ToolError`` with a message written for the model to read.
Each observation remembers the region of the original it shows, so containment can be checked
whatever the source.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from PIL import Image

from emulate.common.errors import EmulateError

TOOLS = ("focus_area", "zoom_in", "reuse")
SCALE = 1000  # normalized coordinates run from 0 to SCALE
MAX_FACTOR = 4.0
MIN_SIDE_PX = 4  # a box narrower than this (in source pixels) is degenerate
MAX_OBSERVATION_PIXELS = 2048 * 2048
CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


class ToolError(EmulateError, ValueError):
    """A call the runtime cannot execute; its message becomes an error observation."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)

    def to_text(self) -> str:
        body = json.dumps({"name": self.name, "arguments": self.arguments})
        return f"<tool_call>{body}</tool_call>"


@dataclass(frozen=True)
class Reply:
    """What a model's turn asks for: a call, an answer, or neither (``error`` says why).

    ``units`` say what the call's coordinates are: ``"family"`` (the model family's convention:
    0-1000 for the grammar) or ``"pixels"`` of the source image as the model sees it."""

    text: str
    call: ToolCall | None = None
    answer: str | None = None
    error: str | None = None
    units: str = "family"


@dataclass(frozen=True)
class Observation:
    """An image in the context and the region of the original it shows (pixels)."""

    image: Image.Image
    region: tuple[float, float, float, float]


def parse_reply(text: str) -> Reply:
    """Read one assistant turn; a malformed call is an ``error``, never an exception."""
    call = CALL_RE.search(text)
    answer = ANSWER_RE.search(text)
    if call and (not answer or call.start() < answer.start()):
        try:
            return Reply(text, call=parse_call(call.group(1)))
        except ToolError as exc:
            return Reply(text, error=str(exc))
    if answer:
        return Reply(text, answer=answer.group(1).strip())
    if "<tool_call>" in text:
        return Reply(text, error="the tool call is not closed with </tool_call>")
    return Reply(text, error="the reply holds neither a <tool_call> nor an <answer>")


def parse_call(body: str) -> ToolCall:
    data = load_json(body)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        raise ToolError('the tool call needs {"name": ..., "arguments": {...}}')
    if data["name"] not in TOOLS:
        raise ToolError(f"unknown tool {data['name']!r}; the tools are {', '.join(TOOLS)}")
    arguments = data.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ToolError("the tool call's arguments must be a JSON object")
    return ToolCall(data["name"], arguments)


def load_json(body: str):
    """Strict JSON (no NaN or Infinity), any nesting depth refused cleanly."""
    try:
        return json.loads(body, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ToolError(f"the tool call is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ToolError("the tool call's JSON is nested too deeply; give a flat object") from None


def _no_constant(name: str):
    raise ToolError(f"the tool call holds {name}; coordinates must be finite numbers")


def execute(call: ToolCall, observations: list[Observation]) -> Observation:
    """Run one call on the context's images; raises ``ToolError`` for anything invalid."""
    if call.name == "reuse":
        return observations[0]
    source = _source(call.arguments, observations)
    width, height = source.image.size
    if call.name == "focus_area":
        box = _box(call.arguments, width, height)
        crop = source.image.crop(box)
        crop = crop.resize(capped(crop.size, 1.0), Image.BILINEAR)
        return Observation(crop, _region(source, box))
    factor = _factor(call.arguments)
    if "box" in call.arguments:
        box = _box(call.arguments, width, height)
        if factor is None:  # as far as the source's size allows, at most MAX_FACTOR
            fit = min(width / (box[2] - box[0]), height / (box[3] - box[1]))
            factor = min(MAX_FACTOR, max(1.0, fit))
    else:
        factor = 2 if factor is None else factor
        x, y = _coordinates(call.arguments, "point", 2)
        side_w, side_h = width / factor, height / factor
        left = min(max(x * width / SCALE - side_w / 2, 0), width - side_w)
        top = min(max(y * height / SCALE - side_h / 2, 0), height - side_h)
        box = (round(left), round(top), round(left + side_w), round(top + side_h))
    crop = source.image.crop(box)
    size = capped(crop.size, factor)
    magnified = crop.resize(size, Image.NEAREST if size[0] >= crop.width else Image.BILINEAR)
    return Observation(magnified, _region(source, box))


def capped(size: tuple[int, int], factor: float) -> tuple[int, int]:
    """``size`` magnified by ``factor``, scaled down to at most MAX_OBSERVATION_PIXELS."""
    width, height = size[0] * factor, size[1] * factor
    if width * height > MAX_OBSERVATION_PIXELS:
        shrink = math.sqrt(MAX_OBSERVATION_PIXELS / (width * height))
        return max(1, math.floor(width * shrink)), max(1, math.floor(height * shrink))
    return round(width), round(height)


def _factor(arguments: dict) -> float | None:
    if "factor" not in arguments:
        return None
    factor = arguments["factor"]
    if isinstance(factor, bool) or not isinstance(factor, int | float):
        raise ToolError("factor must be a number")
    if not 1 < factor <= MAX_FACTOR:
        raise ToolError(f"factor {factor} is out of range: zoom_in magnifies 1 < factor <= 4")
    return factor


def _box(arguments: dict, width: int, height: int) -> tuple[int, int, int, int]:
    """The call's normalized ``box`` in pixels of a width x height source."""
    x0, y0, x1, y1 = _coordinates(arguments, "box", 4)
    if x1 <= x0 or y1 <= y0:
        raise ToolError(f"box {[x0, y0, x1, y1]} is empty: it needs x0 < x1 and y0 < y1")
    left, top = x0 * width / SCALE, y0 * height / SCALE
    right, bottom = x1 * width / SCALE, y1 * height / SCALE
    if min(right - left, bottom - top) < MIN_SIDE_PX:
        raise ToolError(
            f"box {[x0, y0, x1, y1]} is under {MIN_SIDE_PX} pixels of the source on a side"
        )
    return round(left), round(top), round(right), round(bottom)


def contains(region: tuple[float, ...], target: tuple[float, ...]) -> bool:
    """Whether a region of the original holds the whole target box (pixels)."""
    return (
        region[0] <= target[0] + 1e-6
        and region[1] <= target[1] + 1e-6
        and region[2] >= target[2] - 1e-6
        and region[3] >= target[3] - 1e-6
    )


def _source(arguments: dict, observations: list[Observation]) -> Observation:
    source = arguments.get("source", 0)
    if isinstance(source, bool) or not isinstance(source, int):
        raise ToolError(f"source must be an image index, got {source!r}")
    if not 0 <= source < len(observations):
        raise ToolError(
            f"unknown source {source}: the context holds images 0..{len(observations) - 1}"
        )
    return observations[source]


def _coordinates(arguments: dict, key: str, n: int) -> list[int]:
    values = arguments.get(key)
    if values is None and "bbox_2d" in arguments:
        raise ToolError(
            f'this grammar takes "box" in 0..{SCALE}, not "bbox_2d" (DeepEyes\' and Mini-o3\'s '
            "key): write \"box\", or run with --format deepeyes or minio3"
        )
    if not isinstance(values, list) or len(values) != n:
        raise ToolError(f"{key} must be a list of {n} integers in 0..{SCALE}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
        raise ToolError(f"{key} must be a list of {n} integers in 0..{SCALE}")
    if any(not 0 <= v <= SCALE for v in values):
        raise ToolError(f"{key} {values} is out of range: coordinates run from 0 to {SCALE}")
    return list(values)


def _region(source: Observation, box: tuple[int, int, int, int]) -> tuple[float, ...]:
    """The part of the original that ``box`` (pixels of ``source``) shows."""
    left, top, right, bottom = source.region
    sx = (right - left) / source.image.width
    sy = (bottom - top) / source.image.height
    return (left + box[0] * sx, top + box[1] * sy, left + box[2] * sx, top + box[3] * sy)
