"""The call grammar and the three operations: exact pixels, and every bad call a clear error."""

import numpy as np
import pytest
from PIL import Image

from emulate.vision.tools import (
    MAX_OBSERVATION_PIXELS,
    Observation,
    ToolCall,
    ToolError,
    capped,
    contains,
    execute,
    parse_reply,
)


def gradient(width=128, height=96):
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    return Image.fromarray(pixels)


def original(image):
    return [Observation(image, (0.0, 0.0, float(image.width), float(image.height)))]


def call(text):
    return parse_reply(f"think <tool_call>{text}</tool_call>")


def test_reply_with_a_call_an_answer_or_neither():
    reply = call('{"name": "focus_area", "arguments": {"box": [0, 0, 500, 500]}}')
    assert reply.call == ToolCall("focus_area", {"box": [0, 0, 500, 500]})
    assert parse_reply("so <answer> rows </answer>").answer == "rows"
    assert "neither" in parse_reply("I am not sure").error
    assert "not closed" in parse_reply('<tool_call>{"name": "reuse"}').error


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"name": "focus_area", "arguments": {"box": [0, 0, 5', "not valid JSON"),
        ('{"name": "rotate", "arguments": {}}', "unknown tool 'rotate'"),
        ('["focus_area"]', '{"name"'),
        ('{"name": "zoom_in", "arguments": [1, 2]}', "must be a JSON object"),
    ],
)
def test_malformed_calls_are_errors_not_exceptions(body, message):
    reply = call(body)
    assert reply.call is None and message in reply.error


def test_focus_area_crops_exactly_the_box():
    image = gradient()
    box = ToolCall("focus_area", {"box": [250, 500, 750, 1000], "source": 0})
    seen = execute(box, original(image))
    assert seen.region == (32.0, 48.0, 96.0, 96.0)
    assert np.array_equal(np.asarray(seen.image), np.asarray(image)[48:96, 32:96])


def test_zoom_in_magnifies_the_square_around_the_point_and_stays_inside():
    image = gradient(128, 128)
    seen = execute(ToolCall("zoom_in", {"point": [0, 1000], "factor": 4}), original(image))
    assert seen.region == (0.0, 96.0, 32.0, 128.0)  # shifted inside the image
    assert seen.image.size == (128, 128)
    back = seen.image.resize((32, 32), Image.NEAREST)
    assert np.array_equal(np.asarray(back), np.asarray(image)[96:128, 0:32])


def test_zoom_in_magnifies_a_box_by_its_factor():
    image = gradient(128, 128)
    seen = execute(ToolCall("zoom_in", {"box": [250, 500, 500, 750], "factor": 4}), original(image))
    assert seen.region == (32.0, 64.0, 64.0, 96.0)
    assert seen.image.size == (128, 128)
    back = seen.image.resize((32, 32), Image.NEAREST)
    assert np.array_equal(np.asarray(back), np.asarray(image)[64:96, 32:64])
    with pytest.raises(ToolError, match="is empty"):
        execute(ToolCall("zoom_in", {"box": [500, 500, 400, 600], "factor": 2}), original(image))
    with pytest.raises(ToolError, match="out of range"):
        execute(ToolCall("zoom_in", {"box": [0, 0, 500, 500], "factor": 8}), original(image))


def test_zoom_in_on_a_box_without_factor_magnifies_as_far_as_the_source_allows():
    image = gradient(128, 128)
    seen = execute(ToolCall("zoom_in", {"box": [250, 500, 500, 750]}), original(image))
    assert seen.region == (32.0, 64.0, 64.0, 96.0) and seen.image.size == (128, 128)  # 4x
    wide = execute(ToolCall("zoom_in", {"box": [0, 0, 800, 500]}), original(image))
    assert wide.image.size == (128, 80)  # the width fills the source: 1.25x, not 4x
    capped = execute(ToolCall("zoom_in", {"box": [0, 0, 125, 125]}), original(image))
    assert capped.image.size == (64, 64)  # at most 4x


def test_crop_of_an_observation_maps_back_to_the_original():
    image = gradient(128, 128)
    context = original(image)
    context.append(execute(ToolCall("zoom_in", {"point": [250, 250], "factor": 2}), context))
    inner = execute(ToolCall("focus_area", {"box": [500, 500, 1000, 1000], "source": 1}), context)
    assert inner.region == (32.0, 32.0, 64.0, 64.0)
    assert contains(inner.region, (40, 40, 56, 56)) and not contains(inner.region, (0, 0, 40, 40))
    assert execute(ToolCall("reuse"), context) is context[0]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"box": [0, 0, 1200, 500]}, "out of range"),
        ({"box": [500, 0, 400, 500]}, "empty"),
        ({"box": [0, 0, 10, 500]}, "under 4 pixels"),
        ({"box": [0, 0, 500]}, "list of 4"),
        ({"box": [0, 0, "a", 500]}, "list of 4"),
        ({"box": [0, 0, 500, 500], "source": 3}, "unknown source 3"),
        ({"box": [0, 0, 500, 500], "source": "x"}, "image index"),
    ],
)
def test_bad_boxes_and_sources_raise_tool_errors(arguments, message):
    with pytest.raises(ToolError, match=message):
        execute(ToolCall("focus_area", arguments), original(gradient()))


@pytest.mark.parametrize("factor", [1, 5, 0.5, "big", True])
def test_zoom_factor_is_bounded(factor):
    with pytest.raises(ToolError, match="factor"):
        execute(ToolCall("zoom_in", {"point": [500, 500], "factor": factor}), original(gradient()))


def test_zoom_on_zoom_stays_under_the_observation_pixel_cap():
    """Factor 4 on the previous observation, from a 2048-px image: without the cap the
    observations would grow 2048 -> 8192 -> 32768 px on a side."""
    context = original(Image.new("RGB", (2048, 2048), (200, 10, 10)))
    for k in range(4):
        zoom = ToolCall("zoom_in", {"box": [0, 0, 1000, 1000], "factor": 4, "source": k})
        context.append(execute(zoom, context))
        width, height = context[-1].image.size
        assert width * height <= MAX_OBSERVATION_PIXELS
    assert context[-1].region == (0.0, 0.0, 2048.0, 2048.0)


def test_a_large_crop_is_scaled_down_to_the_cap_keeping_its_aspect():
    image = Image.new("RGB", (4000, 1000), (0, 0, 255))
    seen = execute(ToolCall("focus_area", {"box": [0, 0, 1000, 1000]}), original(image))
    assert seen.region == (0.0, 0.0, 4000.0, 1000.0)
    width, height = seen.image.size
    assert width * height <= MAX_OBSERVATION_PIXELS and abs(width / height - 4) < 0.01


@pytest.mark.parametrize(("size", "factor"), [((10, 10), 4), ((3000, 10), 4), ((999, 2001), 2.5)])
def test_capped_sizes_match_the_direct_formula(size, factor):
    width, height = capped(size, factor)
    target = size[0] * factor * size[1] * factor
    if target <= MAX_OBSERVATION_PIXELS:
        assert (width, height) == (round(size[0] * factor), round(size[1] * factor))
    else:
        assert width * height <= MAX_OBSERVATION_PIXELS
        assert (width + 1) * (height + 1) > MAX_OBSERVATION_PIXELS * 0.99


def test_a_bbox_2d_in_the_grammar_names_the_key_and_the_formats():
    with pytest.raises(ToolError, match='not "bbox_2d".*--format deepeyes'):
        execute(ToolCall("zoom_in", {"bbox_2d": [0, 0, 50, 50]}), original(gradient()))
