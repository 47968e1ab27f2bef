"""LoRA, DoRA and VeRA through ``peft``, on every attention and MLP linear of both towers.

One adapter is kept and trained across the whole stream; KA and ZS are measured with it on.
"""

from __future__ import annotations

import torch

from emulate.continual.methods.base import Strategy

TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]


class LoRA(Strategy):
    name = "lora"
    lr_scale = 4.0
    rank = 4

    def config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=2 * self.rank, target_modules=TARGETS)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.config())


class DoRA(LoRA):
    name = "dora"

    def config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank, lora_alpha=2 * self.rank, target_modules=TARGETS, use_dora=True
        )


class VeRA(LoRA):
    name = "vera"
    lr_scale = 10.0
    rank = 32

    def config(self):
        from peft import VeraConfig

        return VeraConfig(r=self.rank, target_modules=TARGETS, save_projection=True)
