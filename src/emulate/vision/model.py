"""The project's small VLM: a CLIP vision tower and a Llama decoder joined by Llava's projector.

Built from transformers' own classes and saved with its processor and chat template, so that
``AutoProcessor`` and ``AutoModelForImageTextToText`` load it like any checkpoint. The tower
reads a 32x32 input in 8x8 patches (16 image tokens per image); the processor shrinks every
image to that input with a bilinear filter (a filter both image-processor backends, PIL and
torchvision, implement). The tokenizer
is byte-level BPE trained on the grammar's own texts, digits split from words, so that each
coordinate is one token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from emulate.vision.scenes import ENCODER_SIDE

END, PAD, IMAGE, USER, ASSISTANT = "<|end|>", "<|pad|>", "<image>", "<|user|>", "<|assistant|>"
GRAMMAR_WORDS = ("<tool_call>", "</tool_call>", "<answer>", "</answer>", "focus_area", "zoom_in")
PATCH = 8
MAX_LEN = 320

CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}<|assistant|>"
    "{%- else -%}<|user|>{%- endif -%}"
    "{%- if m['content'] is string -%}{{ m['content'] }}"
    "{%- else -%}{%- for part in m['content'] -%}"
    "{%- if part['type'] == 'image' -%}<image>{%- else -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if m['role'] == 'assistant' -%}<|end|>{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


@dataclass(frozen=True)
class VLMShape:
    vision_hidden: int
    vision_layers: int
    hidden: int
    layers: int
    heads: int = 4


def digit_bpe(texts: list[str], special_tokens: list[str], vocab_cap: int) -> Tokenizer:
    """Byte-level BPE with digit runs split from words (each coordinate one token)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=False), pre_tokenizers.ByteLevel(False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_cap,
        min_frequency=2,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def train_tokenizer(texts: list[str], vocab_cap: int = 1024) -> PreTrainedTokenizerFast:
    tok = digit_bpe(texts * 4, [END, PAD, IMAGE, USER, ASSISTANT], vocab_cap)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token=PAD,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",
    )
    wrapped.add_tokens(list(GRAMMAR_WORDS))
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def new_processor(tokenizer) -> LlavaProcessor:
    images = CLIPImageProcessorPil(
        size={"height": ENCODER_SIDE, "width": ENCODER_SIDE},
        do_center_crop=False,
        resample=Image.BILINEAR,  # BOX exists only in the PIL backend, not torchvision's
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )


def new_model(shape: VLMShape, tokenizer, seed: int) -> LlavaForConditionalGeneration:
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        image_size=ENCODER_SIDE,
        patch_size=PATCH,
        hidden_size=shape.vision_hidden,
        intermediate_size=2 * shape.vision_hidden,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.heads,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=2 * shape.hidden,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=MAX_LEN,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    model = LlavaForConditionalGeneration(config)
    with torch.no_grad():
        embeddings = _tower_embeddings(model.model.vision_tower).position_embedding.weight
        embeddings.copy_(grid_positions(embeddings.shape[0], embeddings.shape[1]))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def grid_positions(n_positions: int, width: int, amplitude: float = 1.0) -> torch.Tensor:
    """2D sine-cosine position embeddings for the tower (row 0 is the class token: zeros).

    Learned position embeddings start as small noise, and a decoder cannot read *where* a patch
    is until they grow; a grid code from the start lets grounding be learned in minutes.
    """
    side = round((n_positions - 1) ** 0.5)
    quarter = width // 4
    frequencies = 1.0 / (10.0 ** (torch.arange(quarter) / max(1, quarter)))
    rows, cols = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    parts = []
    for coordinate in (rows.flatten(), cols.flatten()):
        angles = coordinate[:, None].float() * frequencies[None, :]
        parts += [torch.sin(angles), torch.cos(angles)]
    grid = torch.cat(parts, dim=1)
    out = torch.zeros(n_positions, width)
    out[1:, : grid.shape[1]] = amplitude * grid
    return out


def assistant_labels(input_ids: torch.Tensor, tokenizer, skip: list[list[int]]) -> torch.Tensor:
    """Labels that keep only the assistant's own tokens (its text and closing ``<|end|>``).

    Images, user turns, error observations and the turns listed in ``skip`` (per row: indices
    of assistant turns, e.g. the wrong first call of a recovery chain) get -100.
    """
    start = tokenizer.convert_tokens_to_ids(ASSISTANT)
    end = tokenizer.convert_tokens_to_ids(END)
    labels = torch.full_like(input_ids, -100)
    for row, ids in enumerate(input_ids.tolist()):
        turn, inside = -1, False
        for j, token in enumerate(ids):
            if token == start:
                turn, inside = turn + 1, True
                continue
            if inside and turn not in skip[row]:
                labels[row, j] = token
            if token == end:
                inside = False
    return labels


def _tower_embeddings(tower):
    """The embeddings module of a CLIP vision tower (wrapped or not)."""
    inner = getattr(tower, "vision_model", tower)
    return inner.embeddings
