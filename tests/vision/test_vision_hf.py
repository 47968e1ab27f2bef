"""The Hugging Face path: a tiny random Llava saved with its processor, loaded by the Auto
classes, driven through the chat template and the runtime; the Qwen-VL pixel convention."""

import numpy as np
import pytest
import torch
from PIL import Image

from emulate.vision import chains
from emulate.vision.adapters import Adapter, ModelLoadError
from emulate.vision.model import VLMShape, assistant_labels, new_model, new_processor
from emulate.vision.model import train_tokenizer as vision_tokenizer
from emulate.vision.runtime import run
from emulate.vision.scenes import make_scene, scene_rng
from emulate.vision.tools import ToolCall, ToolError
from emulate.vision.train import ChatCollator, alignment_example


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    processor = new_processor(vision_tokenizer(chains.corpus()))
    model = new_model(VLMShape(16, 1, 32, 1), processor.tokenizer, seed=0)
    path = tmp_path_factory.mktemp("llava")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_auto_classes_load_it_and_the_runtime_never_crashes(tiny_llava):
    adapter = Adapter.load(tiny_llava, max_new_tokens=12)
    assert adapter.family == "llava"
    scene = make_scene(scene_rng(0, "eval", 0))
    trace = run(adapter, scene.render(), "What code is on the red tile?", max_calls=2)
    assert trace.stopped in ("answer", "call_cap", "turn_cap")
    assert trace.answer is not None or all(s.error for s in trace.steps)


@pytest.mark.parametrize("backend", ["pil", "torchvision"])
def test_the_processor_shrinks_the_scene_alike_in_either_backend(tiny_llava, backend):
    """Both image-processor backends feed the encoder the scene's bilinear shrink."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_llava, backend=backend)
    image = make_scene(scene_rng(0, "eval", 1)).render()
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"][0]
    expected = np.asarray(image.resize((32, 32), Image.BILINEAR), dtype=np.float32) / 255
    expected = torch.tensor((expected - 0.5) / 0.5).permute(2, 0, 1)
    assert pixels.shape == expected.shape
    # torchvision's antialiased bilinear and PIL's differ by rounding at edges only
    assert (pixels - expected).abs().mean() < 0.02


def test_loss_covers_the_assistants_own_tokens_only(tiny_llava):
    adapter = Adapter.load(tiny_llava)
    example = alignment_example(0, 0)
    example["messages"].append({"role": "user", "content": [{"type": "image"}]})
    example["messages"].append({"role": "assistant", "content": [{"type": "text", "text": "x"}]})
    example["images"].append(example["images"][0])
    batch = ChatCollator(adapter.processor)([example])
    tokenizer = adapter.processor.tokenizer
    kept = tokenizer.decode([t for t in batch["labels"][0].tolist() if t != -100])
    assert kept == example["messages"][1]["content"][0]["text"] + "<|end|>" + "x<|end|>"
    skipped = assistant_labels(batch["input_ids"], tokenizer, [[0]])
    assert tokenizer.decode([t for t in skipped[0].tolist() if t != -100]) == "x<|end|>"


def test_a_path_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        Adapter.load(tmp_path)


class _QwenLike:
    """A Qwen2-VL image processor behind the adapter's pixel conversion."""

    def __init__(self):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        self.image_processor = Qwen2VLImageProcessorPil(
            size={"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 64}
        )


def test_qwen25_boxes_in_resized_pixels_become_normalized():
    adapter = Adapter.__new__(Adapter)
    adapter.family, adapter.processor = "qwen2_5_vl", _QwenLike()
    image = Image.new("RGB", (300, 150))
    height, width = adapter.resized_size(image)
    assert (height, width) == (140, 308)  # multiples of 28, aspect kept, under the pixel cap
    call = ToolCall("focus_area", {"box": [77, 35, 154, 70], "source": 0})
    assert adapter.to_normalized(call, image).arguments["box"] == [250, 250, 500, 500]
    outside = ToolCall("focus_area", {"box": [0, 0, 400, 70]})  # beyond the resized width
    with pytest.raises(ToolError, match="outside the 308x140 image"):
        adapter.to_normalized(outside, image)
    adapter.family = "qwen2_vl"  # 0-1000 relative, as Qwen2-VL's grounding format
    assert adapter.to_normalized(call, image) == call
    assert adapter.to_normalized(call, image, "pixels").arguments["box"] == [250, 250, 500, 500]
