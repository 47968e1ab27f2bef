"""Random tiny Hugging Face models and a tokenizer, built inside the tests (no hub needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

TEXT = (
    "The quick brown fox jumps over the lazy dog. Emulated fine-tuning combines a large base "
    "model with the fine-tuning delta of a small model. Où est la gare? Ça coûte 5€. "
    "Numbers 0123456789 and punctuation !?,.;:'\"()[]{} are here too. "
)


def make_tokenizer(extra_tokens: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer of ~300 tokens with BOS/EOS and a chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([TEXT] * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.add_bos_token = True
    if extra_tokens:
        fast.add_tokens([f"<extra_{i}>" for i in range(extra_tokens)])
    return fast


def llama(vocab: int, hidden: int = 32, layers: int = 2, seed: int = 0, padded: int = 0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab + padded, hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    _sharpen(model)
    return model.eval()


def gpt2(vocab: int, hidden: int = 32, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4, n_positions=128,
        bos_token_id=1, eos_token_id=2,
    )
    model = GPT2LMHeadModel(config)
    _sharpen(model)
    return model.eval()


def _sharpen(model) -> None:
    """Scale the output layer so distributions are peaked and greedy choices are not near-ties."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20.0)


def save(model, tokenizer, path: Path) -> str:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
