"""Regularisation methods: online EWC and SI, both pulling weights toward the last task's end.

Importances are divided by their mean, so the strength is on the same scale for both and for
any model size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from emulate.continual.clip import clip_loss
from emulate.continual.methods.base import Strategy


def _named(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _quadratic(model, importance: dict, anchor: dict, strength: float) -> torch.Tensor | None:
    if not importance:
        return None
    total = sum((importance[n] * (p - anchor[n]) ** 2).sum() for n, p in _named(model).items())
    return 0.5 * strength * total


def _normalised(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    mean = torch.cat([v.flatten() for v in values.values()]).mean().clamp_min(1e-20)
    return {n: v / mean for n, v in values.items()}


class EWC(Strategy):
    """Online EWC: an empirical Fisher from ``fisher_batches`` batches of the task's own data at
    each task's end, the old Fisher decayed by ``gamma``; the pass is charged to the budget."""

    name = "ewc"

    def __init__(self, strength: float = 0.02, gamma: float = 0.9, fisher_batches: int = 4):
        self.strength, self.gamma, self.fisher_batches = strength, gamma, fisher_batches
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model):
        return _quadratic(model, self.fisher, self.anchor, self.strength)

    def task_end(self, model, task: int, batches: Callable[[int], dict]) -> None:
        params = _named(model)
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = model.training
        model.train()
        for i in range(self.fisher_batches):
            model.zero_grad(set_to_none=True)
            clip_loss(model, batches(i)).backward()
            for n, p in params.items():
                if p.grad is not None:
                    fisher[n] += p.grad.detach() ** 2 / self.fisher_batches
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        fisher = _normalised(fisher)
        self.fisher = {
            n: self.gamma * self.fisher[n] + f if n in self.fisher else f for n, f in fisher.items()
        }
        self.anchor = {n: p.detach().clone() for n, p in params.items()}

    def extra_passes(self) -> int:
        return self.fisher_batches

    def extra_state_bytes(self, model) -> int:
        return 2 * sum(p.numel() * p.element_size() for p in _named(model).values())


class SI(Strategy):
    """Synaptic intelligence: each weight's contribution to the loss decrease along its path
    (-grad x update, summed over steps), divided by its squared total move at task end."""

    name = "si"

    def __init__(self, strength: float = 0.02, damping: float = 1e-3):
        self.strength, self.damping = strength, damping
        self.omega: dict[str, torch.Tensor] = {}
        self.path: dict[str, torch.Tensor] = {}
        self.previous: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def task_begin(self, model, task: int) -> None:
        params = _named(model)
        self.start = {n: p.detach().clone() for n, p in params.items()}
        self.previous = {n: p.detach().clone() for n, p in params.items()}
        self.path = {n: torch.zeros_like(p) for n, p in params.items()}

    def penalty(self, model):
        return _quadratic(model, self.omega, self.anchor, self.strength)

    @torch.no_grad()
    def after_update(self, model) -> None:
        for n, p in _named(model).items():
            if p.grad is not None:
                self.path[n] -= p.grad * (p - self.previous[n])
            self.previous[n].copy_(p)

    @torch.no_grad()
    def task_end(self, model, task: int, batches) -> None:
        params = _named(model)
        new = {
            n: (self.path[n] / ((p - self.start[n]) ** 2 + self.damping)).clamp_min(0)
            for n, p in params.items()
        }
        new = _normalised(new)
        self.omega = {n: self.omega.get(n, 0) + v for n, v in new.items()}
        self.anchor = {n: p.detach().clone() for n, p in params.items()}

    def extra_state_bytes(self, model) -> int:
        return 5 * sum(p.numel() * p.element_size() for p in _named(model).values())
