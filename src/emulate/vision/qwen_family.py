"""The default family: a small random Qwen2.5-VL, built from a config, with its own processor.

The model is transformers' ``Qwen2_5_VLForConditionalGeneration`` (windowed vision tower,
2x2 patch merger, M-RoPE decoder), shrunk to train on two CPU cores. Its processor is
Qwen2.5-VL's own: the Qwen2-VL image processor (patch 14, 2x2 merge, so one image token per
28x28 pixels) with dynamic resolution between ``MIN_PIXELS`` and ``MAX_PIXELS``:

- a full scene (the objects world draws 672x672) is shrunk to ``FULL_SIDE`` x ``FULL_SIDE``
  (64 image tokens), a third of its side, where a 2-pixel stroke is under one pixel wide;
- a crop keeps its own pixels down to one image token (``MIN_PIXELS`` is 28x28, so the
  processor magnifies nothing itself), and a crop magnified 4x gets 16x the tokens until it
  reaches the cap, so ``zoom_in`` is a richer input, as with the released checkpoints.

The tokenizer is byte-level BPE of this project's design (digit runs kept whole, so every
coordinate up to 1023 is one token) carrying the special tokens the Qwen2.5-VL processor and
model need; the call grammar's tags and tool names are single tokens, so the adapter reads the
family as trained on the grammar and stops on a closing tag. Boxes follow Qwen2.5-VL: absolute
pixels of the image as the processor resized it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from emulate.vision.model import digit_bpe

PATCH = 14
MERGE = 2
FACTOR = PATCH * MERGE  # pixels per image token along each side
FULL_SIDE = 224  # a full view's side after the processor: 8x8 = 64 image tokens
MAX_PIXELS = FULL_SIDE * FULL_SIDE
MIN_PIXELS = FACTOR * FACTOR
CONTEXT = 2048

PAD, EOS, IM_START, IM_END = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
SPECIAL = [
    PAD, IM_START, IM_END,
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    VISION_START, VISION_END, "<|vision_pad|>", IMAGE_PAD, VIDEO_PAD,
]
# The call grammar's words, each one (non-special) token: decoded, and usable as stop tokens.
GRAMMAR = (
    "<tool_call>", "</tool_call>", "<answer>", "</answer>", "focus_area", "zoom_in", "reuse",
)
VOCAB_CAP = 2048

# Typed content parts; an image is the vision block the processor expands into image tokens.
# The assistant's text sits in a generation block, so a trainer can mask all else.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}{%- generation -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<|im_end|>' }}{%- endgeneration -%}"
    "{%- else -%}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<|im_end|>' }}"
    "{%- endif -%}{{ '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class QwenShape:
    """Sizes of the tower and decoder (the defaults train on two CPU cores)."""

    vision_hidden: int = 96
    vision_depth: int = 3
    vision_heads: int = 4
    hidden: int = 192
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    rope_theta: float = 10.0


SHAPES = {
    "micro": QwenShape(vision_hidden=32, vision_depth=2, vision_heads=2, hidden=64, layers=1,
                       heads=2, kv_heads=1),
    "small": QwenShape(vision_hidden=64, vision_depth=2, hidden=128, layers=2),
    "default": QwenShape(),
}


def base_corpus() -> list[str]:
    """Texts every member needs: the grammar's calls and answers, every coordinate 0-1023."""
    numbers = " ".join(str(i) for i in range(1024))
    calls = [
        '<tool_call>{"name": "focus_area", "arguments": {"box": [12, 40, 96, 130], '
        '"source": 0}}</tool_call>',
        '<tool_call>{"name": "zoom_in", "arguments": {"box": [8, 16, 64, 72], "source": 1, '
        '"factor": 4}}</tool_call>',
        '<tool_call>{"name": "reuse", "arguments": {}}</tool_call>',
        "<answer>A</answer> Observation 1. error: the box is empty.",
        "You are a helpful assistant. Think with images: crop, zoom and look again.",
    ]
    return [numbers, numbers] + calls


def new_tokenizer(texts: Iterable[str] = (), vocab_cap: int = VOCAB_CAP) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``texts`` and the base corpus, Qwen2.5-VL's special tokens first."""
    tok = digit_bpe((list(texts) + base_corpus()) * 2, list(SPECIAL), vocab_cap)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        padding_side="left",
        extra_special_tokens={"image_token": IMAGE_PAD, "video_token": VIDEO_PAD},
    )
    wrapped.add_tokens(list(GRAMMAR))
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def new_processor(tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLProcessor:
    """Qwen2.5-VL's processor with this family's pixel range."""
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessorPil(size=size, patch_size=PATCH, merge_size=MERGE),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size, patch_size=PATCH, merge_size=MERGE),
        chat_template=CHAT_TEMPLATE,
    )


def mrope_section(head_dim: int) -> list[int]:
    """M-RoPE's split of the rotary frequencies: time, height, width.

    Sections take the frequencies in order, fastest first, so width gets the slowest. With
    Qwen's proportions (2:3:3) on this family's 16 pairs and theta 10,000, width's fastest
    frequency turned 0.025 radians across an 8x8 grid of image tokens: attention could not
    tell left from right, and no box was learned (measured). Here time keeps one eighth,
    height and width share the rest, and ``QwenShape.rope_theta`` (10) makes width's slowest
    frequency still turn about a radian across the grid."""
    half = head_dim // 2
    time = max(1, half // 8)
    height = (half - time) // 2
    return [time, height, half - time - height]


def new_config(shape: QwenShape, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig:
    ids = tokenizer.convert_tokens_to_ids
    head_dim = shape.hidden // shape.heads
    section = mrope_section(head_dim)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": shape.hidden,
        "intermediate_size": 2 * shape.hidden,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "max_position_embeddings": CONTEXT,
        "rope_parameters": {"rope_type": "default", "rope_theta": shape.rope_theta,
                            "mrope_section": section},
        "bos_token_id": None,
        "eos_token_id": ids(EOS),
        "pad_token_id": ids(PAD),
        "tie_word_embeddings": True,
    }
    vision = {
        "depth": shape.vision_depth,
        "hidden_size": shape.vision_hidden,
        "intermediate_size": 2 * shape.vision_hidden,
        "num_heads": shape.vision_heads,
        "out_hidden_size": shape.hidden,
        "patch_size": PATCH,
        "spatial_merge_size": MERGE,
        "window_size": 4 * FACTOR,  # windows of 4x4 image tokens; the last block sees all
        "fullatt_block_indexes": [shape.vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids(IMAGE_PAD),
        video_token_id=ids(VIDEO_PAD),
        vision_start_token_id=ids(VISION_START),
        vision_end_token_id=ids(VISION_END),
        tie_word_embeddings=True,
    )


def new_model(shape: QwenShape, tokenizer, seed: int = 0) -> Qwen2_5_VLForConditionalGeneration:
    """A random model of ``shape`` for ``tokenizer`` (seeded)."""
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(new_config(shape, tokenizer))
    ids = tokenizer.convert_tokens_to_ids
    model.generation_config.eos_token_id = [ids(EOS)]
    model.generation_config.pad_token_id = ids(PAD)
    model.generation_config.bos_token_id = None
    return model


def build_checkpoint(
    path: str | Path, shape: QwenShape = QwenShape(), texts: Iterable[str] = (), seed: int = 0
) -> Path:
    """A random model and its processor saved at ``path``, loadable by the Auto classes."""
    path = Path(path)
    processor = new_processor(new_tokenizer(texts))
    model = new_model(shape, processor.tokenizer, seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def image_tokens(processor, image) -> int:
    """How many image tokens ``processor`` gives ``image``."""
    grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
    return int(grid.prod()) // processor.image_processor.merge_size**2
