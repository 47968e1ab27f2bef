"""The loop: answers, caps, error observations, interventions; a looping model never hangs."""

from PIL import Image

from emulate.vision.runtime import WITHHELD, run
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
