"""The three real families' tiny checkpoints load through the Auto classes and generate."""

import pytest
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor


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
