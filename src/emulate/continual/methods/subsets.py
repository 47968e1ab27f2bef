"""BitFit (biases only) and LNFit (LayerNorm weights and biases only)."""

from __future__ import annotations

import torch

from emulate.continual.methods.base import Strategy, train_only


class BitFit(Strategy):
    name = "bitfit"
    lr_scale = 4.0

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        train_only(model, lambda name, module: name.endswith("bias"))
        return model


class LNFit(Strategy):
    name = "lnfit"
    lr_scale = 4.0

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        train_only(model, lambda name, module: isinstance(module, torch.nn.LayerNorm))
        return model
