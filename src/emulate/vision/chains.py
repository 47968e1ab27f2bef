"""The words of every chain: what the model says before a call, after an observation, to answer.

Shared by synthesis (which writes chains) and training (alignment examples), so the model learns
one phrasing. Boxes are the target's grid cell in 0-1000 coordinates (a fixed-size window around
the tile: a tile jittered within its cell is always inside).
"""

from __future__ import annotations

from emulate.vision.scenes import GRID, Question, Tile, place
from emulate.vision.tools import SCALE, ToolCall


def cell_box(row: int, col: int) -> list[int]:
    step = SCALE // GRID
    return [col * step, row * step, (col + 1) * step, (row + 1) * step]


def cell_centre(row: int, col: int) -> list[int]:
    x0, y0, x1, y1 = cell_box(row, col)
    return [(x0 + x1) // 2, (y0 + y1) // 2]


def look_call(tool: str, row: int, col: int) -> ToolCall:
    """The call that shows cell (row, col) of the original at the encoder's full resolution."""
    if tool == "focus_area":
        return ToolCall("focus_area", {"box": cell_box(row, col), "source": 0})
    if tool == "zoom_in":
        return ToolCall("zoom_in", {"box": cell_box(row, col), "source": 0})
    if tool == "reuse":
        return ToolCall("reuse", {})
    raise ValueError(f"unknown tool {tool!r}")


def answer(text: str) -> str:
    return f"<answer>{text}</answer>"


def before_call(question: Question, call: ToolCall) -> str:
    """The turn that calls a tool restates which tile it looks for, right before the call.

    The box is then read off the phrase just written, as in grounding, whatever came
    earlier in the conversation: a retry after a wrong crop and the original shown again is no
    harder than a first look.
    """
    return looking_for(question.target, call)


def looking_for(tile: Tile, call: ToolCall) -> str:
    where = place(tile)
    if call.name == "reuse":
        return f"The tile {where} is too small; I look again. {call.to_text()}"
    return f"The tile {where} is too small; I look closer. {call.to_text()}"


def shows(tile: Tile | None) -> str:
    """What a crop shows, in the words of chains and of alignment's captions alike."""
    if tile is None:
        return "I see no tile clearly."
    return f"The {tile.colour} tile shows {tile.code}."


def after_observation(question: Question, seen: Tile | None) -> str:
    if seen is not None and seen.colour == question.target.colour:
        return f"{shows(seen)} {answer(seen.code)}"
    return f"{shows(None)} {answer(question.answer)}"


def after_miss(question: Question, seen: Tile | None, retry: ToolCall) -> str:
    what = f"the {seen.colour} tile" if seen is not None else "no tile"
    return f"This shows {what}, not the tile {place(question.target)}. {retry.to_text()}"


def after_error(question: Question, call: ToolCall) -> str:
    return f"The call failed; I look again for the tile {place(question.target)}. {call.to_text()}"


def direct(question: Question) -> str:
    return answer(question.answer)


def grounding_prompt(tile: Tile) -> str:
    return f"Find the tile {place(tile)}."


def colour_prompt(tile: Tile) -> str:
    return f"Name the colour {place(tile)}."


def grounding_reply(tile: Tile) -> str:
    """A chain's first turn: SFT then starts from a model that already writes calls."""
    return looking_for(tile, look_call("focus_area", tile.row, tile.col))


def caption_prompt() -> str:
    return "Describe the tile."


def caption_reply(tile: Tile | None) -> str:
    return shows(tile)


def corpus() -> list[str]:
    """Texts covering every word, number and format the model will meet (for the tokenizer)."""
    from emulate.vision.scenes import CODES, COLOURS

    texts = []
    for colour in COLOURS:
        for row in range(GRID):
            for col in range(GRID):
                t = Tile(colour, CODES[0], row, col, 0, 0)
                q = Question("fine", f"What code is on the tile {place(t)}?", t.code, t)
                texts += [q.text, f"What colour is the tile {place(t)}?", grounding_prompt(t)]
                texts += [colour_prompt(t), answer(colour)]
                for tool in ("focus_area", "zoom_in", "reuse"):
                    call = look_call(tool, row, col)
                    texts += [before_call(q, call), after_miss(q, t, call), after_error(q, call)]
                texts.append(after_observation(q, t))
    texts += [answer(w) for w in CODES] + [caption_prompt(), shows(None)]
    texts += [shows(Tile(c, k, 0, 0, 0, 0)) for c in COLOURS for k in CODES]
    texts += [
        "error: box [0, 250, 250, 250] is empty: it needs x0 < x1 and y0 < y1",
        "error: the tool call is not valid JSON (Expecting ',' delimiter)",
    ]
    texts += [f"Observation {i}." for i in range(8)] + [str(v) for v in range(0, SCALE + 1, 125)]
    return texts
