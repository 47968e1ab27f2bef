"""The evaluation's metrics computed by hand on traces built by hand."""

from __future__ import annotations

from PIL import Image

from emulate.vision.evaluate import box_iou, score
from emulate.vision.runtime import Step, Trace
from emulate.vision.scenes import Question, Tile
from emulate.vision.tools import Observation

TILE = Tile("red", "rows", 0, 0, 8, 8)  # box (8, 8, 8 + TILE, 8 + TILE)


def _trace(region, answer, called=True, failed=False):
    image = Image.new("RGB", (128, 128))
    observations = [Observation(image, (0.0, 0.0, 128.0, 128.0))]
    steps = []
    if called:
        call = {"name": "focus_area", "arguments": {"box": [0, 0, 1, 1]}}
        if failed:
            steps.append(Step('<tool_call>{"name": 1}</tool_call>', None, "error: bad"))
        else:
            observations.append(Observation(image, region))
            steps.append(Step("<tool_call>...</tool_call>", call, None, 1))
    steps.append(Step(f"<answer>{answer}</answer>" if answer else "...", None))
    return Trace("q", observations, steps, answer)


def test_box_iou_by_hand():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == 50 / 150
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou((0, 0, 0, 10), (0, 0, 10, 10)) == 0.0


def test_answered_and_box_iou50_count_questions():
    question = Question("fine", "q", "rows", TILE)
    x0, y0, x1, y1 = TILE.box
    tight = (x0 - 1, y0 - 1, x1 + 1, y1 + 1)
    loose = (0.0, 0.0, 128.0, 128.0)
    traces = [
        (_trace(tight, "rows"), question),  # IoU > 0.5, right
        (_trace(loose, "cols"), question),  # IoU small, wrong
        (_trace(None, None, failed=True), question),  # first call failed, no answer
        (_trace(None, "rows", called=False), question),  # answered without a call
    ]
    metrics = score(traces)
    assert metrics["box_iou50"] == 1 / 4
    assert metrics["answered"] == 3 / 4
    assert metrics["accuracy"] == 2 / 4
    assert metrics["without_calls"] == 1 / 4
