"""Each family's call format, on replies written the way that project writes them, mapped to the
runtime's ToolCall; every malformed reply an error, never an exception."""

import json

import pytest

from emulate.vision.formats import (
    FORMATS,
    FormatError,
    parse,
    pixels_to_normalized,
    system_prompt,
)
from emulate.vision.tools import ToolCall, ToolError, parse_reply

DEEPEYES = (
    "<think>The sign is small; I will zoom in on it.</think>\n<tool_call>\n"
    '{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [2761, 715, 3160, 896], '
    '"label": "the blue sign"}}\n</tool_call>'
)
MINIO3 = (
    "<think>\nStep 2 | re_examine\n[observation_1] The head is cut off.\n</think>\n"
    '<grounding>{"bbox_2d":[0.10,0.05,0.60,0.90],"source":"observation_1"}</grounding>'
)
QWEN_BOX = (
    "<|object_ref_start|>the sign<|object_ref_end|><|box_start|>(100,200),(300,400)<|box_end|>"
)
OPENAI = json.dumps(
    {
        "content": None,
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {
                    "name": "zoom_in",
                    "arguments": json.dumps({"box": [0, 0, 500, 500], "source": 0}),
                },
            }
        ],
    }
)


def test_deepeyes_crops_the_original_in_absolute_pixels():
    reply = parse(DEEPEYES, "deepeyes")
    assert reply.units == "pixels"
    assert reply.call == ToolCall(
        "focus_area", {"box": [2761, 715, 3160, 896], "source": 0, "label": "the blue sign"}
    )


def test_minio3_relative_box_and_named_source():
    reply = parse(MINIO3, "minio3")
    assert reply.units == "family"
    assert reply.call == ToolCall("zoom_in", {"box": [100, 50, 600, 900], "source": 1})
    plain = parse('<grounding>{"bbox_2d": [0, 0, 0.5, 0.5]}</grounding>', "minio3")
    assert plain.call.arguments == {"box": [0, 0, 500, 500], "source": 0}
    original = '<grounding>{"bbox_2d": [0, 0, 1, 1], "source": "original_image"}</grounding>'
    assert parse(original, "minio3").call.arguments["source"] == 0


def test_qwen_box_and_openai_tool_calls():
    assert parse(QWEN_BOX, "qwen_box").call == ToolCall(
        "zoom_in", {"box": [100, 200, 300, 400], "source": 0}
    )
    assert parse(OPENAI, "openai").call == ToolCall(
        "zoom_in", {"box": [0, 0, 500, 500], "source": 0}
    )
    answered = json.dumps({"content": "It reads <answer>42</answer>", "tool_calls": []})
    assert parse(answered, "openai").answer == "42"


def test_grammar_is_the_projects_parser():
    text = ToolCall("focus_area", {"box": [0, 0, 500, 500], "source": 0}).to_text()
    assert parse(text, "grammar") == parse_reply(text)


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_answers_with_the_answer_tag(name):
    assert parse("so <answer> red </answer>", name).answer == "red"
    assert parse("I am not sure", name).error


BAD = [
    ("deepeyes", DEEPEYES.replace("image_zoom_in_tool", "image_rotate_tool"), "unknown tool"),
    ("deepeyes", DEEPEYES.replace("2761", "NaN"), "NaN"),
    ("deepeyes", DEEPEYES.replace("2761", "Infinity"), "Infinity"),
    ("deepeyes", DEEPEYES.replace("2761", "1e999"), "non-finite"),
    ("deepeyes", DEEPEYES.replace("</tool_call>", ""), "not closed"),
    ("minio3", MINIO3.replace("0.60", "600"), "not pixels"),
    ("minio3", MINIO3.replace("observation_1", "the_crop"), "unknown source"),
    ("minio3", MINIO3.replace("0.10", "NaN"), "NaN"),
    ("qwen_box", QWEN_BOX.replace("100", "nan"), "non-finite"),
    ("qwen_box", QWEN_BOX.replace("(300,400)", "(30,40)"), "empty"),
    ("qwen_box", "<|box_start|>100,200,300,400<|box_end|>", "write the box as"),
    ("openai", OPENAI.replace("zoom_in", "rotate"), "unknown tool"),
    (
        "openai",
        '{"tool_calls": [{"function": {"name": "zoom_in", "arguments": '
        '{"box": [NaN, 0, 500, 500]}}}]}',
        "NaN",
    ),
    ("openai", '{"tool_calls": "zoom"}', "must be a list"),
    (
        "grammar",
        '<tool_call>{"name": "zoom_in", "arguments": {"box": [Infinity, 0, 1, 1]}}</tool_call>',
        "Infinity",
    ),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD)
def test_malformed_replies_are_errors_that_name_the_problem(name, text, message):
    reply = parse(text, name)
    assert reply.call is None and reply.answer is None
    assert message in reply.error


@pytest.mark.parametrize("name", FORMATS)
def test_deeply_nested_json_is_an_error_not_a_recursion(name):
    deep = "[" * 100_000 + "]" * 100_000
    bodies = {
        "grammar": f'<tool_call>{{"name": "zoom_in", "arguments": {deep}}}</tool_call>',
        "deepeyes": f"<tool_call>{deep}</tool_call>",
        "minio3": f"<grounding>{deep}</grounding>",
        "qwen_box": f"<|box_start|>{deep}<|box_end|>",
        "openai": f'{{"tool_calls": {deep}}}',
    }
    reply = parse(bodies[name], name)
    assert reply.error and reply.call is None


def test_an_unknown_format_is_a_clear_error():
    with pytest.raises(FormatError, match="choose from grammar, deepeyes"):
        parse("<answer>x</answer>", "llava_json")


def test_pixels_become_normalized_and_the_wrong_convention_is_refused():
    call = ToolCall("focus_area", {"box": [77, 35, 154, 70], "source": 0})
    assert pixels_to_normalized(call, 308, 140).arguments["box"] == [250, 250, 500, 500]
    with pytest.raises(ToolError, match="outside the 308x140 image"):
        pixels_to_normalized(ToolCall("focus_area", {"box": [0, 0, 500, 70]}), 308, 140)
    with pytest.raises(ToolError, match="relative coordinates"):
        pixels_to_normalized(ToolCall("zoom_in", {"box": [0.1, 0.1, 0.5, 0.5]}), 308, 140)
    with pytest.raises(ToolError, match="finite"):
        pixels_to_normalized(ToolCall("zoom_in", {"box": [0, 0, float("inf"), 5]}), 308, 140)


@pytest.mark.parametrize("name", FORMATS)
def test_the_system_prompt_describes_the_format_and_the_pixel_cap(name):
    marker = {
        "grammar": "<tool_call>",
        "deepeyes": "image_zoom_in_tool",
        "minio3": "<grounding>",
        "qwen_box": "<|box_start|>",
        "openai": "tool_calls",
    }
    prompt = system_prompt(name)
    assert marker[name] in prompt and "2048x2048 pixels" in prompt and "<answer>" in prompt


WRITTEN = {
    "grammar": ToolCall("zoom_in", {"box": [0, 0, 500, 500], "source": 0}).to_text(),
    "deepeyes": DEEPEYES,
    "minio3": MINIO3,
    "qwen_box": QWEN_BOX,
    "openai": OPENAI,
}


@pytest.mark.parametrize("written", FORMATS)
@pytest.mark.parametrize("chosen", FORMATS)
def test_a_reply_in_another_format_names_the_format_to_choose(written, chosen):
    reply = parse(WRITTEN[written], chosen)
    if written == chosen:
        assert reply.call is not None and reply.error is None
    else:
        assert reply.call is None and f"--format {written}" in reply.error


def test_a_reply_in_no_format_names_no_other_format():
    reply = parse('<call>{"bbox": [1, 2, 3, 4]}</call>', "deepeyes")
    assert reply.error and "--format" not in reply.error
