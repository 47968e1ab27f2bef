"""Call formats: how each model family writes a tool call, read into the runtime's ``ToolCall``.

- ``grammar``: the project's own ``<tool_call>{"name": TOOL, "arguments": {...}}</tool_call>``
  (``tools.parse_reply``); coordinates in the model family's convention.
- ``deepeyes``: DeepEyes' ``<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d":
  [x1, y1, x2, y2], "label": ...}}</tool_call>``, absolute pixels of the original image as the
  model sees it; crops the original (``focus_area`` on source 0).
- ``minio3``: Mini-o3's ``<grounding>{"bbox_2d": [x0, y0, x1, y1], "source": "original_image"}
  </grounding>``, the box relative in [0, 1], ``source`` the original or ``observation_i``
  (the i-th observation); crops and magnifies (``zoom_in``).
- ``qwen_box``: Qwen-VL's grounding ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``, coordinates in
  the family's convention; magnifies that region of the original (``zoom_in``).
- ``openai``: a JSON reply ``{"tool_calls": [{"type": "function", "function": {"name": TOOL,
  "arguments": "{...}"}}]}`` naming the project's tools; coordinates in the family's convention.

Every format answers with ``<answer>...</answer>``. A parsed call's ``units`` say what its
coordinates are: ``"family"`` (the model family's convention) or ``"pixels"``; Mini-o3's
relative boxes are scaled to 0-1000 here. Anything malformed is a ``Reply`` with ``error``.
"""

from __future__ import annotations

import json
import math
import re

from emulate.common.errors import EmulateError
from emulate.vision.tools import (
    ANSWER_RE,
    CALL_RE,
    SCALE,
    TOOLS,
    Reply,
    ToolCall,
    ToolError,
    load_json,
    parse_call,
    parse_reply,
)

FORMATS = ("grammar", "deepeyes", "minio3", "qwen_box", "openai")
GROUNDING_RE = re.compile(r"<grounding>(.*?)</grounding>", re.DOTALL)
NUMBER = r"\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|nan|-?inf)\s*"
BOX_RE = re.compile(
    rf"<\|box_start\|>\s*\({NUMBER},{NUMBER}\)\s*,\s*\({NUMBER},{NUMBER}\)\s*<\|box_end\|>",
    re.IGNORECASE,
)
DEEPEYES_TOOL = "image_zoom_in_tool"


class FormatError(EmulateError, ValueError):
    """A call format the runtime does not know."""


def check_format(name: str) -> str:
    if name not in FORMATS:
        raise FormatError(f"unknown call format {name!r}; choose from {', '.join(FORMATS)}")
    return name


def parse(text: str, name: str = "grammar") -> Reply:
    """Read one assistant turn in format ``name``; never raises for any reply text. A reply
    that fails here but reads as a call in another format says which format to choose."""
    reply = _read(text, check_format(name))
    if reply.error is None:
        return reply
    for other in FORMATS:
        if other != name and _read(text, other).call is not None:
            return Reply(text, error=f"{reply.error}; the reply reads as a {other} call: "
                         f"choose that format (--format {other})")
    return reply


def _read(text: str, name: str) -> Reply:
    reader = {
        "grammar": parse_reply,
        "deepeyes": _deepeyes,
        "minio3": _minio3,
        "qwen_box": _qwen_box,
        "openai": _openai,
    }[name]
    try:
        return reader(text)
    except ToolError as exc:
        return Reply(text, error=str(exc))


def _first(text: str, pattern: re.Pattern, opener: str, closer: str) -> Reply | str:
    """The body of the first call, or the Reply when the turn answers or says nothing."""
    call, answer = pattern.search(text), ANSWER_RE.search(text)
    if call and (not answer or call.start() < answer.start()):
        return call.group(1)
    if answer:
        return Reply(text, answer=answer.group(1).strip())
    if opener in text:
        raise ToolError(f"the tool call is not closed with {closer}")
    raise ToolError(f"the reply holds neither a {opener} nor an <answer>")


def _deepeyes(text: str) -> Reply:
    body = _first(text, CALL_RE, "<tool_call>", "</tool_call>")
    if isinstance(body, Reply):
        return body
    data = load_json(body)
    if not isinstance(data, dict) or data.get("name") != DEEPEYES_TOOL:
        name = data.get("name") if isinstance(data, dict) else None
        raise ToolError(f"unknown tool {name!r}; the tool is {DEEPEYES_TOOL}")
    arguments = data.get("arguments")
    if not isinstance(arguments, dict):
        raise ToolError("the tool call's arguments must be a JSON object")
    box = _numbers(arguments.get("bbox_2d"), "bbox_2d", "absolute pixels")
    label = arguments.get("label")
    extra = {"label": label} if isinstance(label, str) else {}
    return Reply(text, call=ToolCall("focus_area", {"box": box, "source": 0, **extra}),
                 units="pixels")


def _minio3(text: str) -> Reply:
    body = _first(text, GROUNDING_RE, "<grounding>", "</grounding>")
    if isinstance(body, Reply):
        return body
    data = load_json(body)
    if not isinstance(data, dict):
        raise ToolError('the grounding call needs {"bbox_2d": [...], "source": ...}')
    box = _numbers(data.get("bbox_2d"), "bbox_2d", "relative coordinates in [0, 1]")
    if any(not 0 <= v <= 1 for v in box):
        raise ToolError(
            f"bbox_2d {box} is outside [0, 1]: Mini-o3 boxes are relative to the source "
            "image (0 to 1), not pixels"
        )
    source = _source(data.get("source", "original_image"))
    scaled = [round(v * SCALE) for v in box]
    return Reply(text, call=ToolCall("zoom_in", {"box": scaled, "source": source}))


def _source(source) -> int:
    if source in (None, "", "original_image"):
        return 0
    if isinstance(source, str) and re.fullmatch(r"observation_\d{1,6}", source):
        return int(source.removeprefix("observation_"))
    raise ToolError(f"unknown source {source!r}; give original_image or observation_i")


def _qwen_box(text: str) -> Reply:
    box, answer = BOX_RE.search(text), ANSWER_RE.search(text)
    if box and (not answer or box.start() < answer.start()):
        values = [float(v) for v in box.groups()]
        _numbers(values, "the box", "the family's coordinates")
        values = [int(v) if v.is_integer() else v for v in values]
        return Reply(text, call=ToolCall("zoom_in", {"box": values, "source": 0}))
    if answer:
        return Reply(text, answer=answer.group(1).strip())
    if "<|box_start|>" in text:
        raise ToolError("write the box as <|box_start|>(x1,y1),(x2,y2)<|box_end|>")
    raise ToolError("the reply holds neither a <|box_start|> box nor an <answer>")


def _openai(text: str) -> Reply:
    start = text.find("{")
    if start < 0:
        answer = ANSWER_RE.search(text)
        if answer:
            return Reply(text, answer=answer.group(1).strip())
        raise ToolError('the reply holds neither {"tool_calls": [...]} nor an <answer>')
    try:
        data, _ = json.JSONDecoder(parse_constant=_reject).raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise ToolError(f"the reply is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise ToolError("the reply's JSON is nested too deeply; give a flat object") from None
    if not isinstance(data, dict):
        raise ToolError('the reply must be a JSON object {"tool_calls": [...]}')
    calls = data.get("tool_calls")
    if not calls:
        answer = ANSWER_RE.search(str(data.get("content") or ""))
        if answer:
            return Reply(text, answer=answer.group(1).strip())
        raise ToolError('the reply holds no "tool_calls" and no <answer> in its "content"')
    if not isinstance(calls, list) or not isinstance(calls[0], dict):
        raise ToolError('"tool_calls" must be a list of {"function": {...}} objects')
    function = calls[0].get("function", calls[0])
    if not isinstance(function, dict):
        raise ToolError('a tool call needs {"function": {"name": ..., "arguments": ...}}')
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        arguments = load_json(arguments) if arguments.strip() else {}
    return Reply(text, call=parse_call(json.dumps({"name": function.get("name"),
                                                   "arguments": arguments})))


def _reject(name: str):
    raise ToolError(f"the reply holds {name}; coordinates must be finite numbers")


def _numbers(values, key: str, units: str) -> list[float]:
    """Four finite numbers x0 < x1, y0 < y1, or a ToolError naming the format's units."""
    if not isinstance(values, list | tuple) or len(values) != 4 or any(
        isinstance(v, bool) or not isinstance(v, int | float) for v in values
    ):
        raise ToolError(f"{key} must be a list of 4 numbers [x1, y1, x2, y2] in {units}")
    if not all(math.isfinite(v) for v in values):
        raise ToolError(f"{key} {list(values)} holds a non-finite number; give {units}")
    if values[2] <= values[0] or values[3] <= values[1]:
        raise ToolError(f"{key} {list(values)} is empty: it needs x1 < x2 and y1 < y2")
    return list(values)


def system_prompt(name: str) -> str:
    """What the tools are and how to call them, for a checkpoint not trained on the format."""
    from emulate.vision.tools import MAX_OBSERVATION_PIXELS

    side = math.isqrt(MAX_OBSERVATION_PIXELS)
    cap = f"Every image a tool returns is at most {side}x{side} pixels."
    answer = "When you can answer, write <answer>your answer</answer>."
    calls = {
        "grammar": (
            "Call a tool as <tool_call>{\"name\": TOOL, \"arguments\": {...}}</tool_call>. "
            "Tools: focus_area {\"box\": [x0, y0, x1, y1], \"source\": k} crops that box; "
            "zoom_in {\"box\": [...], \"source\": k} or {\"point\": [x, y], \"factor\": f} "
            "magnifies up to 4x; reuse {} shows the original again. Source 0 is the original "
            "image, k the k-th observation."
        ),
        "deepeyes": (
            "Call <tool_call>{\"name\": \"image_zoom_in_tool\", \"arguments\": {\"bbox_2d\": "
            "[x1, y1, x2, y2], \"label\": \"what is there\"}}</tool_call> to crop a region of "
            "the original image; bbox_2d is in absolute pixels of the image."
        ),
        "minio3": (
            "Call <grounding>{\"bbox_2d\": [x0, y0, x1, y1], \"source\": \"original_image\"}"
            "</grounding> to zoom into a region; bbox_2d is relative in [0, 1], source is "
            "original_image or observation_i for the i-th observation."
        ),
        "qwen_box": (
            "Write <|box_start|>(x1,y1),(x2,y2)<|box_end|> to zoom into that region of the "
            "original image."
        ),
        "openai": (
            "Reply with JSON {\"tool_calls\": [{\"type\": \"function\", \"function\": "
            "{\"name\": TOOL, \"arguments\": \"{...}\"}}]} to call a tool; tools: "
            + ", ".join(TOOLS) + " (box [x0, y0, x1, y1], source k)."
        ),
    }[check_format(name)]
    return f"You can look closer at the image with tools. {calls} {cap} {answer}"


def pixels_to_normalized(call: ToolCall, width: int, height: int) -> ToolCall:
    """The call's ``box`` / ``point`` from absolute pixels of a width x height image to 0-1000;
    a value outside the image, or a box that reads as relative (0-1), is a ToolError."""
    arguments = dict(call.arguments)
    for key in ("box", "point"):
        values = arguments.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or any(
            isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
            for v in values
        ):
            raise ToolError(f"{key} must be a list of finite numbers in absolute pixels")
        sides = [width, height] * (len(values) // 2)
        if len(values) not in (2, 4) or any(
            not 0 <= v <= s for v, s in zip(values, sides, strict=True)
        ):
            raise ToolError(
                f"{key} {values} lies outside the {width}x{height} image the model sees: "
                "coordinates are absolute pixels of that image"
            )
        if key == "box" and max(values) <= 1:
            raise ToolError(
                f"box {values} reads as relative coordinates (0-1): give absolute pixels of "
                f"the {width}x{height} image"
            )
        arguments[key] = [round(v * SCALE / s) for v, s in zip(values, sides, strict=True)]
    return ToolCall(call.name, arguments)


def write(call: ToolCall, name: str, seen: tuple[int, int], family_pixels: bool) -> str | None:
    """The call (0-1000 coordinates) as format ``name`` writes it, or None where the format
    cannot say it (DeepEyes only crops the original; Mini-o3 and Qwen boxes only magnify).

    ``seen`` is the (width, height) of the call's source image as the model sees it;
    ``family_pixels`` says the family's convention is absolute pixels (Qwen2.5-VL)."""
    width, height = seen
    arguments = dict(call.arguments)

    def pixels(values):
        sides = [width, height] * (len(values) // 2)
        return [round(v * s / SCALE) for v, s in zip(values, sides, strict=True)]

    def family(values):
        return pixels(values) if family_pixels else [round(v) for v in values]

    box, source = arguments.get("box"), arguments.get("source", 0)
    plain_box = box is not None and "factor" not in arguments and "point" not in arguments
    if name in ("grammar", "openai"):
        for key in ("box", "point"):
            if key in arguments:
                arguments[key] = family(arguments[key])
        if name == "grammar":
            return ToolCall(call.name, arguments).to_text()
        body = json.dumps({"name": call.name, "arguments": json.dumps(arguments)})
        return json.dumps({"tool_calls": [{"type": "function", "function": json.loads(body)}]})
    if name == "deepeyes" and call.name == "focus_area" and plain_box and source == 0:
        body = {"name": DEEPEYES_TOOL, "arguments": {"bbox_2d": pixels(box)}}
        return f"<tool_call>{json.dumps(body)}</tool_call>"
    if name == "minio3" and call.name == "zoom_in" and plain_box:
        where = "original_image" if source == 0 else f"observation_{source}"
        body = {"bbox_2d": [round(v / SCALE, 3) for v in box], "source": where}
        return f"<grounding>{json.dumps(body)}</grounding>"
    if name == "qwen_box" and call.name == "zoom_in" and plain_box and source == 0:
        x1, y1, x2, y2 = family(box)
        return f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
    check_format(name)
    return None
