"""Random "roofline" models for benchmarks: a large Llama ~10x the parameters of two small ones.

Weights are random, so what they say is noise; what matters is that the large model's compute,
not Python, dominates a decoding step, as it does with real checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SIZES = {
    "large": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=12, num_key_value_heads=4),
    # ~10x fewer parameters than large (7.6M against 76M).
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=10,
                  num_attention_heads=4, num_key_value_heads=2),
}
PROMPTS = [
    "The history of the city begins",
    "Write a short story about a robot who",
    "In mathematics, a prime number",
    "The recipe calls for",
    "Once upon a time in a land far away there lived",
    "Explain to a child why the sky is blue:",
    "The committee met on Tuesday to discuss",
    "Weather report:",
]


def tokenizer(vocab_size: int = 8000) -> PreTrainedTokenizerFast:
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    text = " ".join(PROMPTS) + " the of and to in a is that for it as with was on"
    raw.train_from_iterator([text] * 10, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


def build(root: Path, vocab_size: int = 8000) -> dict[str, str]:
    """Save large, small and small_tuned (a perturbed copy of small) under root; reuse if there."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: str(root / name) for name in ("large", "small", "small_tuned")}
    if all((Path(p) / "config.json").exists() for p in paths.values()):
        return paths
    tok = tokenizer(vocab_size)
    vocab = len(tok)
    for name, seed in (("large", 0), ("small", 1)):
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=vocab, max_position_embeddings=2048, bos_token_id=1,
                             eos_token_id=2, pad_token_id=0, **SIZES[name])
        model = LlamaForCausalLM(config)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(8.0)
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
        if name == "small":
            save_perturbed(model, tok, paths["small_tuned"])
    return paths


def save_perturbed(model, tok, path: str, scale: float = 0.02) -> None:
    """A stand-in fine-tune: every weight nudged by `scale` times its own spread."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * p.std() * torch.randn_like(p))
    model.save_pretrained(path)
    tok.save_pretrained(path)


def parameters(path: str) -> int:
    model = LlamaForCausalLM.from_pretrained(path)
    return sum(p.numel() for p in model.parameters())
