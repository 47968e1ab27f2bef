"""LoRA, DoRA and VeRA through ``peft``, on the attention and MLP of both towers.

One adapter is kept and trained across the whole stream; KA and ZS are measured with it on.

Targets, per model family: transformers' CLIP has linears ``q_proj k_proj v_proj out_proj fc1
fc2`` and all six are adapted by every method. open_clip's attention is a
``torch.nn.MultiheadAttention`` (one packed ``in_proj_weight``, an ``out_proj`` whose forward is
never called) and its MLP the linears ``c_fc c_proj``. peft's LoRA adapts a MultiheadAttention
module as a whole (its in-projection and out-projection, merged in for each forward), so LoRA
targets every attention module and both MLP linears. peft implements DoRA for no
MultiheadAttention and VeRA for linears only, so on open_clip DoRA and VeRA adapt the MLP
linears alone: a departure from the HF targets, forced by the library, and said here.
"""

from __future__ import annotations

import torch

from emulate.continual.methods.base import Strategy

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
OPEN_CLIP_MLP = ("c_fc", "c_proj")


def targets(model: torch.nn.Module, attention_modules: bool) -> list[str]:
    """peft ``target_modules`` for ``model``: HF CLIP's six linears, or for a model with
    ``nn.MultiheadAttention`` (open_clip) its MLP linears by full name, plus every attention
    module when ``attention_modules`` (LoRA)."""
    attention = [n for n, m in model.named_modules() if isinstance(m, torch.nn.MultiheadAttention)]
    if not attention:
        return TARGETS
    inside = tuple(f"{a}." for a in attention)
    mlp = [
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and n.rsplit(".", 1)[-1] in OPEN_CLIP_MLP
        and not n.startswith(inside)
    ]
    return (attention if attention_modules else []) + mlp


class LoRA(Strategy):
    name = "lora"
    lr_scale = 4.0
    rank = 4
    attention_modules = True  # peft can adapt nn.MultiheadAttention as a whole

    def config(self, target_modules: list[str]):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=2 * self.rank, target_modules=target_modules)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.config(targets(model, self.attention_modules)))


class DoRA(LoRA):
    name = "dora"
    attention_modules = False  # peft: "MultiheadAttention does not support DoRA"

    def config(self, target_modules: list[str]):
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank, lora_alpha=2 * self.rank, target_modules=target_modules, use_dora=True
        )


class VeRA(LoRA):
    name = "vera"
    lr_scale = 10.0
    rank = 32
    attention_modules = False  # peft's VeRA takes nn.Linear only

    def config(self, target_modules: list[str]):
        from peft import VeraConfig

        return VeraConfig(r=self.rank, target_modules=target_modules, save_projection=True)
