"""Tiny random checkpoints of real families, built from transformers' configs (not the project's
own model code) and saved with a working processor, so that ``AutoProcessor`` and
``AutoModelForImageTextToText`` load them as they load a hub checkpoint.

Each tokenizer is byte-level BPE trained offline on a few texts, wrapped in
``PreTrainedTokenizerFast`` with the family's special tokens and a chat template in the family's
style. Models are minuscule (hidden 32, one or two layers) so a ``generate`` call takes well
under a second on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from trl.chat_template_utils import qwen2_5_vl_chat_template

TEXTS = [
    "What code is on the red tile? The answer is 42.",
    '<tool_call>{"name": "image_zoom_in_tool", "arguments": {"bbox_2d": [10, 20, 30, 40]}}',
    '{"name": "zoom_in", "arguments": {"box": [0, 0, 500, 500], "source": 0}}</tool_call>',
    "<answer>blue</answer> <|box_start|>(10,20),(300,400)<|box_end|> observation_1",
    "You are a helpful assistant. Think with images: crop, zoom and look again.",
]

# Qwen2-VL / Qwen2.5-VL's own tokens: special ones are dropped by decode(skip_special_tokens),
# the tool-call tags are plain added tokens, as in the released tokenizers.
QWEN_SPECIAL = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_ADDED = ["<tool_call>", "</tool_call>"]

# Qwen2.5-VL's released chat template (Qwen2-VL ships the same one).
QWEN_TEMPLATE = qwen2_5_vl_chat_template

LLAVA_SPECIAL = ["<s>", "</s>", "<unk>", "<pad>", "<image>"]
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for c in message['content'] %}{{ c['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}{% else %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for c in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ c['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ '</s>' }}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def tiny_tokenizer(special: list[str], added: list[str], **roles) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``TEXTS``, the family's special tokens first."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXTS * 4, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **roles)
    wrapped.add_tokens(added)
    return wrapped


def _qwen(path: str | Path, family: str) -> Path:
    from transformers import AutoModelForImageTextToText

    path = Path(path)
    tokenizer = tiny_tokenizer(
        QWEN_SPECIAL, QWEN_ADDED, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    ids = tokenizer.convert_tokens_to_ids
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig as Config
        from transformers import Qwen2_5_VLProcessor as Processor

        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        }
    else:
        from transformers import Qwen2VLConfig as Config
        from transformers import Qwen2VLProcessor as Processor

        vision = {"depth": 1, "embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2, "num_heads": 2}
    config = Config(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = [ids("<|im_end|>"), ids("<|endoftext|>")]
    model.generation_config.pad_token_id = ids("<|endoftext|>")
    processor = _qwen_processor(Processor, tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _qwen_processor(processor_class, tokenizer):
    """The family's processor: images at most 28*28*64 pixels (64 image tokens) here."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}
    return processor_class(
        image_processor=Qwen2VLImageProcessorPil(size=size),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(size=size),
        chat_template=QWEN_TEMPLATE,
    )


def tiny_qwen2_5_vl(path: str | Path) -> Path:
    """A random Qwen2.5-VL (windowed vision tower, absolute-pixel boxes) saved at ``path``."""
    return _qwen(path, "qwen2_5_vl")


def tiny_qwen2_vl(path: str | Path) -> Path:
    """A random Qwen2-VL saved at ``path``."""
    return _qwen(path, "qwen2_vl")


def tiny_llava(path: str | Path) -> Path:
    """A random Llava-1.5-style checkpoint (CLIP tower, 28-px input, 4 image tokens)."""
    from transformers import (
        AutoModelForImageTextToText,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaProcessor,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    path = Path(path)
    tokenizer = tiny_tokenizer(
        LLAVA_SPECIAL,
        ["<tool_call>", "</tool_call>"],
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    ids = tokenizer.convert_tokens_to_ids
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=ids("<s>"),
        eos_token_id=ids("</s>"),
        pad_token_id=ids("<pad>"),
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids("<image>"),
        image_seq_length=4,
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config)
    model.generation_config.eos_token_id = ids("</s>")
    model.generation_config.pad_token_id = ids("<pad>")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
        ),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
