"""The default family: a Qwen2.5-VL checkpoint the Auto classes load, with dynamic resolution."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from emulate.vision import qwen_family as qf


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen_family") / "model"
    return qf.build_checkpoint(path, qf.SHAPES["micro"], texts=["What code is on the star?"])


@pytest.fixture(scope="module")
def loaded(checkpoint):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoProcessor.from_pretrained(checkpoint), AutoModelForImageTextToText.from_pretrained(
        checkpoint
    )


def scene(side: int = 672) -> Image.Image:
    image = Image.new("RGB", (side, side), (24, 24, 24))
    ImageDraw.Draw(image).ellipse((100, 120, 150, 170), fill=(230, 40, 40))
    return image


def test_auto_classes_load_a_qwen2_5_vl(loaded):
    processor, model = loaded
    assert model.config.model_type == "qwen2_5_vl"
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == (qf.MIN_PIXELS, qf.MAX_PIXELS)


def test_full_view_is_capped_and_magnified_crops_get_more_tokens(loaded):
    processor, _ = loaded
    full = qf.image_tokens(processor, scene())
    assert full == (qf.FULL_SIDE // qf.FACTOR) ** 2
    crop = scene().crop((96, 116, 152, 172))  # 56x56: a target and its margin
    native = qf.image_tokens(processor, crop)
    for factor in (2, 4):
        zoomed = crop.resize((56 * factor, 56 * factor), Image.BICUBIC)
        assert qf.image_tokens(processor, zoomed) >= factor * native
    magnified = qf.image_tokens(processor, crop.resize((224, 224), Image.BICUBIC))
    assert magnified >= 4 * native and magnified == full  # 4x of 56 reaches the cap


def test_chat_template_places_the_vision_block_and_marks_the_assistant(loaded):
    processor, _ = loaded
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "What code?"}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>rows</answer>"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<|im_start|>user\nWhat code?<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n<answer>rows</answer><|im_end|>\n"
    )
    out = processor.tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    kept = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert processor.tokenizer.decode(kept) == "<answer>rows</answer><|im_end|>"
    for tag in qf.GRAMMAR:
        assert len(processor.tokenizer.encode(tag, add_special_tokens=False)) == 1
    assert len(processor.tokenizer.tokenize("672")) == 1


def test_generate_runs_on_a_scene(loaded):
    processor, model = loaded
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What code is on the star?"}, {"type": "image", "image": scene()}
    ]}]
    encoded = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert int((encoded["input_ids"] == model.config.image_token_id).sum()) == 64
    with torch.no_grad():
        out = model.generate(**encoded, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == encoded["input_ids"].shape[1] + 5


def test_adapter_loads_it_in_the_grammar_with_pixel_boxes(checkpoint):
    from emulate.vision.adapters import Adapter
    from emulate.vision.runtime import user_turn
    from emulate.vision.tools import Observation

    adapter = Adapter.load(checkpoint, max_new_tokens=4)
    assert adapter.family == "qwen2_5_vl" and adapter.call_format == "grammar"
    assert adapter.system is None
    assert adapter.seen_size(scene()) == (qf.FULL_SIDE, qf.FULL_SIDE)
    reply = adapter([user_turn("What code?", True)], [Observation(scene(), (0, 0, 672, 672))])
    assert isinstance(reply, str)
