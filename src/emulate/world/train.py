"""A plain nanoGPT-style training loop for small Hugging Face Llama models on the CPU.

Examples are whole documents (no packing), so every training row starts where an evaluation
prompt starts; rows of similar length are batched together to waste little on padding.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import LlamaConfig, LlamaForCausalLM

IGNORE = -100
Example = tuple[list[int], list[int]]  # (input ids, labels with IGNORE where no loss)


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    heads: int
    ffn: int

    def config(self, tokenizer, max_len: int = 160) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden,
            intermediate_size=self.ffn,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.heads,
            max_position_embeddings=max_len,
            tie_word_embeddings=True,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            rope_theta=10000.0,
        )


@dataclass(frozen=True)
class Schedule:
    lr: float
    steps: int
    batch: int
    warmup: int = 50
    weight_decay: float = 0.0
    final_lr_fraction: float = 0.1


def document_example(tokenizer, text: str) -> Example:
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    return ids, list(ids)


def chat_example(tokenizer, user: str, reply: str) -> Example:
    """Prompt rendered by the chat template (no loss), then the reply and EOS (loss)."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
    )
    p = tokenizer.encode(prompt, add_special_tokens=False)
    r = tokenizer.encode(" " + reply, add_special_tokens=False) + [tokenizer.eos_token_id]
    return p + r, [IGNORE] * len(p) + r


def batches(
    examples: list[Example], batch: int, rng: random.Random, pad_id: int
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Shuffle, group rows of similar length, right-pad; yields (ids, mask, labels)."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    chunk = batch * 16
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: len(examples[i][0]))
        groups += [part[j : j + batch] for j in range(0, len(part), batch)]
    rng.shuffle(groups)
    for group in groups:
        width = max(len(examples[i][0]) for i in group)
        ids = torch.full((len(group), width), pad_id)
        labels = torch.full((len(group), width), IGNORE)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for row, i in enumerate(group):
            x, y = examples[i]
            ids[row, : len(x)] = torch.tensor(x)
            labels[row, : len(y)] = torch.tensor(y)
            mask[row, : len(x)] = 1
        yield ids, mask, labels


def learning_rate(step: int, s: Schedule) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    progress = (step - s.warmup) / max(1, s.steps - s.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return s.lr * (s.final_lr_fraction + (1 - s.final_lr_fraction) * cosine)


def train(
    model: LlamaForCausalLM,
    epochs: Callable[[int], list[Example]],
    schedule: Schedule,
    seed: int,
    pad_id: int,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """Train for ``schedule.steps`` steps; ``epochs(i)`` gives the examples of epoch ``i``.

    Returns the mean loss over the last 50 steps.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": schedule.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=schedule.lr,
        betas=(0.9, 0.95),
    )
    model.train()
    step, epoch, recent = 0, 0, []
    while step < schedule.steps:
        for ids, mask, labels in batches(epochs(epoch), schedule.batch, rng, pad_id):
            if step >= schedule.steps:
                break
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, schedule)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            recent = (recent + [loss.item()])[-50:]
            step += 1
            if on_step:
                on_step(step, recent[-1])
        epoch += 1
    model.eval()
    return sum(recent) / max(1, len(recent))


def new_model(shape: ModelShape, tokenizer, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(shape.config(tokenizer))
