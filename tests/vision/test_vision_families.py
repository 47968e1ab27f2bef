"""Real families through one runtime: tiny random Qwen2.5-VL, Qwen2-VL and Llava checkpoints
(built from configs) load, generate, count image tokens by pixels, convert boxes in their own
convention, answer through `vision ask`; every bad checkpoint or option is a clear error."""

import json
import shutil

import pytest
from PIL import Image
from tiny_vlms import tiny_tokenizer
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    LlamaConfig,
    LlamaForCausalLM,
)
from typer.testing import CliRunner

from emulate.cli import app
from emulate.common.errors import EmulateError
from emulate.vision.adapters import Adapter, ModelLoadError
from emulate.vision.formats import system_prompt
from emulate.vision.runtime import ContextError, run, user_turn
from emulate.vision.tools import ToolCall, ToolError


@pytest.mark.parametrize(
    ("fixture", "model_type"),
    [
        ("qwen25_checkpoint", "qwen2_5_vl"),
        ("qwen2_checkpoint", "qwen2_vl"),
        ("llava_checkpoint", "llava"),
    ],
)
def test_auto_classes_load_and_generate(request, fixture, model_type):
    path = request.getfixturevalue(fixture)
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path)
    assert model.config.model_type == model_type
    image = Image.new("RGB", (300, 150), "red")
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}],
        }
    ]
    encoded = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**encoded, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > encoded["input_ids"].shape[1]


FAMILIES = [
    ("qwen25_checkpoint", "qwen2_5_vl", "deepeyes"),
    ("qwen2_checkpoint", "qwen2_vl", "qwen_box"),
    ("llava_checkpoint", "llava", "grammar"),
]


@pytest.mark.parametrize(("fixture", "family", "call_format"), FAMILIES)
def test_one_runtime_drives_every_family(request, fixture, family, call_format):
    adapter = Adapter.load(request.getfixturevalue(fixture), max_new_tokens=8)
    assert (adapter.family, adapter.call_format) == (family, call_format)
    assert adapter.system == system_prompt(call_format)  # not trained on the grammar
    trace = run(adapter, Image.new("RGB", (120, 90), "blue"), "What colour?", max_calls=1)
    assert trace.stopped in ("answer", "call_cap", "turn_cap")
    assert trace.answer is not None or all(s.error for s in trace.steps)
    chosen = Adapter.load(request.getfixturevalue(fixture), call_format="minio3")
    assert "<grounding>" in chosen.system and chosen.parse("<answer>a</answer>").answer == "a"


def image_tokens(adapter, image):
    messages = [user_turn("q", image=True)]
    ids = adapter.inputs(messages, [image])["input_ids"][0].tolist()
    return ids.count(adapter.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))


@pytest.mark.parametrize("fixture", ["qwen25_checkpoint", "qwen2_checkpoint"])
def test_a_qwen_model_gets_the_image_tokens_its_pixels_call_for(request, fixture):
    adapter = Adapter.load(request.getfixturevalue(fixture))
    for width, height in [(56, 56), (112, 84), (224, 168)]:
        seen_height, seen_width = adapter.resized_size(Image.new("RGB", (width, height)))
        expected = (seen_height // 28) * (seen_width // 28)
        assert image_tokens(adapter, Image.new("RGB", (width, height))) == expected
    small = Adapter.load(request.getfixturevalue(fixture), max_pixels=28 * 28 * 4)
    assert image_tokens(small, Image.new("RGB", (640, 480))) <= 4


def test_qwen25_boxes_are_pixels_of_the_image_as_seen(qwen25_checkpoint):
    adapter = Adapter.load(qwen25_checkpoint)
    image = Image.new("RGB", (300, 150))
    width, height = adapter.seen_size(image)
    call = ToolCall("focus_area", {"box": [0, 0, width / 2, height / 2], "source": 0})
    assert adapter.to_normalized(call, image).arguments["box"] == [0, 0, 500, 500]
    with pytest.raises(ToolError, match="absolute pixels"):
        adapter.to_normalized(ToolCall("focus_area", {"box": [0, 0, 900, 900]}), image)


CONVENTIONS = [
    # Qwen2-VL: 0-1000 relative; a box in pixels of the 3000x2000 photo is past 1000
    ("qwen2_checkpoint", "<|box_start|>(250,500),(500,1000)<|box_end|>",
     "<|box_start|>(750,1000),(1500,2000)<|box_end|>", "coordinates run from 0 to 1000"),
    # Qwen2.5-VL: absolute pixels of the image as seen; a relative 0-1 box is refused
    ("qwen25_checkpoint", None,
     '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [0.25, 0.5, 0.5, 1]}}'
     "</tool_call>", "relative coordinates"),
]


@pytest.mark.parametrize(("fixture", "right", "wrong", "message"), CONVENTIONS)
def test_a_box_in_the_wrong_convention_is_an_error_observation(
    request, fixture, right, wrong, message
):
    adapter = Adapter.load(request.getfixturevalue(fixture))
    image = Image.new("RGB", (3000, 2000), "white")
    if right is None:  # the same region in pixels of the image as the model sees it
        width, height = adapter.seen_size(image)
        right = (
            '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": '
            f"[{width / 4}, {height / 2}, {width / 2}, {height}]}}}}</tool_call>"
        )
    for reply, error in ((right, None), (wrong, message)):
        replies = iter([reply, "<answer>x</answer>"])
        trace = run(lambda messages, observations, r=replies: next(r), image, "q?",
                    parse=adapter.parse, to_normalized=adapter.to_normalized)
        assert trace.answer == "x"
        if error is None:
            assert trace.steps[0].error is None
            assert trace.observations[1].region == (750.0, 1000.0, 1500.0, 2000.0)
        else:
            assert len(trace.observations) == 1 and error in trace.steps[0].error


def test_a_checkpoint_that_is_not_image_text_to_text(tmp_path, llava_checkpoint):
    tokenizer = tiny_tokenizer(["<pad>"], [], pad_token="<pad>")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="image processor"):
        Adapter.load(tmp_path)
    AutoProcessor.from_pretrained(llava_checkpoint).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="not an image-text-to-text checkpoint"):
        Adapter.load(tmp_path)


def test_a_checkpoint_without_its_processor(tmp_path, llava_checkpoint):
    for name in ("config.json", "model.safetensors"):
        shutil.copy(llava_checkpoint / name, tmp_path / name)
    with pytest.raises(ModelLoadError, match="processor"):
        Adapter.load(tmp_path)
    with pytest.raises(ModelLoadError, match="is a file"):
        Adapter.load(tmp_path / "config.json")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens 0"),
        ({"max_new_tokens": 10**6}, "give 1 to 4096"),
        ({"call_format": "json"}, "unknown call format"),
        ({"max_pixels": 10}, "max_pixels 10"),
    ],
)
def test_bad_adapter_options_are_clear_errors(qwen25_checkpoint, options, message):
    with pytest.raises(EmulateError, match=message):
        Adapter.load(qwen25_checkpoint, **options)


def test_a_prompt_past_the_context_is_refused(llava_checkpoint):
    adapter = Adapter.load(llava_checkpoint, max_new_tokens=8)
    with pytest.raises(ContextError, match="context"):
        run(adapter, Image.new("RGB", (28, 28)), "why " * 3000)


@pytest.mark.parametrize("fixture", ["qwen25_checkpoint", "qwen2_checkpoint", "llava_checkpoint"])
def test_ask_answers_on_any_family(request, fixture, tmp_path):
    Image.new("RGBA", (200, 120), (0, 128, 0, 100)).save(tmp_path / "photo.png")
    result = CliRunner().invoke(
        app,
        [
            "vision",
            "ask",
            "--model",
            str(request.getfixturevalue(fixture)),
            "--image",
            str(tmp_path / "photo.png"),
            "--save",
            str(tmp_path / "seen"),
            "--max-calls",
            "1",
            "--max-turns",
            "1",
            "--max-new-tokens",
            "8",
            "What is green?",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "[1] " in result.output and "[2] " not in result.output and "answer:" in result.output
    assert json.loads((tmp_path / "seen" / "trace.json").read_text())["steps"]
    picture = Image.open(tmp_path / "seen" / "trace.png")  # the trace drawn as one picture
    assert picture.width > 100 and f"picture: {tmp_path / 'seen' / 'trace.png'}" in result.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--max-calls", "1000000"], "give 0 to 32"),
        (["--max-turns", "0"], "give 1 to 64"),
        (["--format", "xml"], "unknown call format"),
        (["--max-new-tokens", "0"], "max_new_tokens 0"),
    ],
)
def test_ask_refuses_bad_options(llava_checkpoint, tmp_path, arguments, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    result = CliRunner().invoke(
        app,
        [
            "vision",
            "ask",
            "--model",
            str(llava_checkpoint),
            "--image",
            str(tmp_path / "a.png"),
            *arguments,
            "q?",
        ],
    )
    assert result.exit_code != 0 and message in " ".join(result.output.split())
