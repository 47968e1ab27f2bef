"""Random "roofline" models for benchmarks: a large Llama ~10x the parameters of two small ones.

Weights are random, so what they say is noise; what matters is that the large model's compute,
not Python, dominates a decoding step, as it does with real checkpoints.
"""

from __future__ import annotations

import math
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


def build_drafting_family(root: Path, vocab_size: int = 8000,
                          noise: float = 0.07) -> dict[str, str]:
    """small, small_tuned and large (small grown, plus noise), so the small model is a good
    draft for the large one (bench_speculative.py); reused if already built."""

    paths = {name: str(root / name) for name in ("large", "small", "small_tuned")}
    if all((Path(p) / "config.json").exists() for p in paths.values()):
        return paths
    tok = tokenizer(vocab_size)
    config = {"vocab_size": len(tok), "max_position_embeddings": 2048, "bos_token_id": 1,
              "eos_token_id": 2, "pad_token_id": 0}
    torch.manual_seed(1)
    small = LlamaForCausalLM(LlamaConfig(**config, **SIZES["small"])).eval()
    with torch.no_grad():
        small.lm_head.weight.mul_(16.0)  # peaked next-token distributions, as trained models have
    large = grow(small, LlamaConfig(**config, **SIZES["large"]), noise)
    for name, model in (("small", small), ("large", large)):
        model.save_pretrained(paths[name])
        tok.save_pretrained(paths[name])
    save_perturbed(small, tok, paths["small_tuned"])
    return paths


def grow(small, config, noise: float, seed: int = 0):
    """A larger Llama computing `small`'s function on its first dimensions, heads and layers
    (zeros elsewhere), then `noise` x the init scale added to every weight."""

    large = LlamaForCausalLM(config).eval()
    s, d = small.config, small.config.hidden_size
    hd = d // s.num_attention_heads
    assert hd == config.hidden_size // config.num_attention_heads
    per_kv_small = s.num_attention_heads // s.num_key_value_heads
    per_kv_large = config.num_attention_heads // config.num_key_value_heads
    heads = [(h // per_kv_small) * per_kv_large + h % per_kv_small
             for h in range(s.num_attention_heads)]  # same key/value head as in the small model
    shrink = math.sqrt(config.hidden_size / d)  # RMSNorm over the extra zero dims
    with torch.no_grad():
        for p in large.parameters():
            p.zero_()
        large.model.embed_tokens.weight[:, :d] = small.model.embed_tokens.weight
        large.lm_head.weight[:, :d] = small.lm_head.weight
        large.model.norm.weight[:d] = small.model.norm.weight / shrink
        for i, layer in enumerate(large.model.layers):
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)
            if i >= s.num_hidden_layers:
                continue
            mine, theirs = layer, small.model.layers[i]
            for norm in ("input_layernorm", "post_attention_layernorm"):
                getattr(mine, norm).weight[:d] = getattr(theirs, norm).weight / shrink
            a, b = mine.self_attn, theirs.self_attn
            for h, big in enumerate(heads):
                rows, own = slice(big * hd, (big + 1) * hd), slice(h * hd, (h + 1) * hd)
                a.q_proj.weight[rows, :d] = b.q_proj.weight[own]
                a.o_proj.weight[:d, rows] = b.o_proj.weight[:, own]
            kv = s.num_key_value_heads * hd
            a.k_proj.weight[:kv, :d] = b.k_proj.weight
            a.v_proj.weight[:kv, :d] = b.v_proj.weight
            f = s.intermediate_size
            mine.mlp.gate_proj.weight[:f, :d] = theirs.mlp.gate_proj.weight
            mine.mlp.up_proj.weight[:f, :d] = theirs.mlp.up_proj.weight
            mine.mlp.down_proj.weight[:d, :f] = theirs.mlp.down_proj.weight
        generator = torch.Generator().manual_seed(seed)
        for name, p in large.named_parameters():
            if "norm" not in name:
                p.add_(noise * config.initializer_range * torch.randn(p.shape, generator=generator))
    return large
