"""The loop: answers, caps, error observations, interventions; a looping model never hangs."""

import pytest
from PIL import Image

from emulate.vision.formats import parse, pixels_to_normalized
from emulate.vision.runtime import WITHHELD, ContextError, LimitError, run
from emulate.vision.tools import ToolCall

IMAGE = Image.new("RGB", (128, 128), (10, 20, 30))
FOCUS = ToolCall("focus_area", {"box": [0, 0, 500, 500], "source": 0}).to_text()


def scripted(*replies):
    seen = []

    def generate(messages, observations):
        seen.append((list(messages), len(observations)))
        return replies[min(len(seen) - 1, len(replies) - 1)]

    return generate, seen


def test_call_then_answer_appends_the_observation_as_a_user_turn():
    generate, seen = scripted(FOCUS, "<answer>rows</answer>")
    trace = run(generate, IMAGE, "q?")
    assert trace.answer == "rows" and trace.stopped == "answer"
    assert trace.observations[1].image.size == (64, 64)
    messages, n_images = seen[1]
    assert n_images == 2 and messages[-1]["content"][-1] == {"type": "image"}


def test_a_looping_model_stops_at_the_call_cap():
    generate, _ = scripted(FOCUS)
    trace = run(generate, IMAGE, "q?", max_calls=3)
    assert trace.answer is None and trace.stopped == "call_cap"
    assert len(trace.calls) == 4 and len(trace.observations) == 4


def test_malformed_replies_become_error_observations_until_the_turn_cap():
    broken = '<tool_call>{"name": "focus_area", "arguments": {"box": [0, 0}</tool_call>'
    generate, seen = scripted(broken)
    trace = run(generate, IMAGE, "q?", max_calls=2)
    assert trace.stopped == "turn_cap" and len(trace.steps) == 4
    assert all("not valid JSON" in s.error for s in trace.steps)
    assert seen[1][0][-1]["content"][0]["text"].startswith("error: the tool call is not valid")


def test_a_bad_box_is_read_by_the_model_and_it_can_recover():
    bad = ToolCall("focus_area", {"box": [0, 0, 2000, 10]}).to_text()
    generate, seen = scripted(bad, FOCUS, "<answer>x</answer>")
    trace = run(generate, IMAGE, "q?")
    assert "out of range" in trace.steps[0].error and trace.steps[1].observation == 1
    assert trace.answer == "x"


def test_withheld_calls_get_an_error_instead_of_the_image():
    generate, seen = scripted(FOCUS, "<answer>x</answer>")
    trace = run(generate, IMAGE, "q?", intervene=lambda call, obs: None)
    assert trace.steps[0].error == WITHHELD and len(trace.observations) == 1
    assert seen[1][0][-1]["content"] == [{"type": "text", "text": WITHHELD}]


def test_coordinates_are_mapped_before_execution():
    pixels = ToolCall("focus_area", {"box": [0, 0, 64, 64]}).to_text()
    generate, _ = scripted(pixels, "<answer>x</answer>")

    def to_normalized(call, source, units):
        assert units == "family"
        box = [round(v * 1000 / source.width) for v in call.arguments["box"]]
        return ToolCall(call.name, {"box": box})

    trace = run(generate, IMAGE, "q?", to_normalized=to_normalized)
    assert trace.observations[1].region == (0.0, 0.0, 64.0, 64.0)


def test_caps_are_bounded_with_clear_errors():
    generate, _ = scripted("<answer>x</answer>")
    with pytest.raises(LimitError, match="give 0 to 32"):
        run(generate, IMAGE, "q?", max_calls=1_000_000)
    with pytest.raises(LimitError, match="give 1 to 64"):
        run(generate, IMAGE, "q?", max_turns=0)
    with pytest.raises(LimitError, match="integer"):
        run(generate, IMAGE, "q?", max_calls=2.5)


def test_a_peer_format_drives_the_loop_with_named_sources():
    first = '<grounding>{"bbox_2d": [0, 0, 0.5, 0.5], "source": "original_image"}</grounding>'
    second = '<grounding>{"bbox_2d": [0.5, 0.5, 1, 1], "source": "observation_1"}</grounding>'
    generate, _ = scripted(first, second, "<answer>x</answer>")
    trace = run(generate, IMAGE, "q?", parse=lambda text: parse(text, "minio3"))
    assert trace.answer == "x" and len(trace.calls) == 2
    assert trace.observations[2].region == (32.0, 32.0, 64.0, 64.0)


def test_pixel_units_without_an_adapter_are_pixels_of_the_source():
    deepeyes = (
        '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0, 0, 64, 32]}}'
        "</tool_call>"
    )
    generate, _ = scripted(deepeyes, "<answer>x</answer>")
    trace = run(generate, IMAGE, "q?", parse=lambda text: parse(text, "deepeyes"))
    assert trace.observations[1].region == (0.0, 0.0, 64.0, 32.0)


@pytest.mark.parametrize(
    "reply",
    [
        '<tool_call>{"name": "zoom_in", "arguments": {"box": [NaN, 0, 9, 9]}}</tool_call>',
        '<tool_call>{"name": "zoom_in", "arguments": {"box": [1e999, 0, 9, 9]}}</tool_call>',
        '<tool_call>{"name": "zoom_in", "arguments": '
        + "[" * 50_000
        + "]" * 50_000
        + "}</tool_call>",
        '<tool_call>{"name": "zoom_in", "arguments": {"box": [0, 0, 900, 900]}}</tool_call>',
    ],
)
def test_bad_boxes_in_a_pixel_family_are_error_observations(reply):
    """Qwen2.5-VL's convention (pixels of the image as seen): NaN, overflow, nesting and a
    0-1000 box past the image all read as errors, and the loop goes on."""
    generate, _ = scripted(reply, "<answer>x</answer>")

    def to_normalized(call, source, units):
        return pixels_to_normalized(call, source.width, source.height)

    trace = run(generate, IMAGE, "q?", to_normalized=to_normalized)
    assert trace.answer == "x" and trace.steps[0].error.startswith("error: ")


def test_a_context_overflow_ends_the_trace_after_the_first_turn():
    def generate(messages, observations):
        if len(messages) > 1:
            raise ContextError("too long")
        return FOCUS

    trace = run(generate, IMAGE, "q?")
    assert trace.stopped == "context" and len(trace.calls) == 1

    def too_long(messages, observations):
        raise ContextError("the question is too long")

    with pytest.raises(ContextError):
        run(too_long, IMAGE, "q?")


def test_a_reply_in_the_wrong_format_is_an_error_observation_naming_the_format():
    minio3 = '<grounding>{"bbox_2d": [0, 0, 0.5, 0.5], "source": "original_image"}</grounding>'
    generate, seen = scripted(minio3, "<answer>x</answer>")
    trace = run(generate, IMAGE, "q?", parse=lambda text: parse(text, "grammar"))
    assert trace.answer == "x" and not trace.calls
    assert "--format minio3" in trace.steps[0].error
    assert seen[1][0][-1]["content"][0]["text"] == trace.steps[0].error
