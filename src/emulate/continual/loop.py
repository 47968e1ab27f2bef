"""The one update loop: contrastive CLIP steps through Accelerate, with a strategy's hooks.

``accelerator.prepare`` and ``accelerator.backward`` make the same loop run on one CPU or, under
``accelerate launch``, data-parallel on several GPUs; nothing here is written for distribution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from emulate.continual.clip import clip_loss
from emulate.continual.methods.base import Strategy, trainable


def new_accelerator():
    """Without an accelerator, processes started by ``accelerate launch --multi_gpu`` (torchrun)
    only join one process group when Accelerate is told to run on the CPU (gloo)."""
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def new_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.1):
    """AdamW, no decay on biases, norms, embeddings' scales or the temperature."""
    params = trainable(model)
    decay = [p for p in params if p.dim() >= 2]
    rest = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=(0.9, 0.98))


def train_steps(
    accelerator,
    model: torch.nn.Module,
    optimizer,
    batches: Callable[[int], dict],
    steps: int,
    lr_at: Callable[[int], float],
    strategy: Strategy,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """``steps`` updates of ``model`` (already prepared); returns the mean loss of the last 20."""
    model.train()
    params = trainable(model)
    recent: list[float] = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        batch = {k: v.to(accelerator.device) for k, v in batches(step).items()}
        loss = clip_loss(model, batch)
        penalty = strategy.penalty(model)
        total = loss if penalty is None else loss + penalty
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(total)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        strategy.after_update(model)
        recent = (recent + [loss.item()])[-20:]
        if on_step:
            on_step(step + 1, recent[-1])
    model.eval()
    return sum(recent) / max(1, len(recent))
