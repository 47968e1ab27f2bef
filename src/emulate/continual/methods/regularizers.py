"""Regularisation methods: online EWC and SI, both pulling weights toward the last task's end.

Departures from the standard forms, all named here: EWC's per-sample terms are the rows of
CLIP's contrastive loss (0.5 x (image-to-text + text-to-image cross-entropy) of one pair, its
gradient taken with the rest of the batch as the negatives), as a contrastive loss has no
independent per-sample likelihood; the Fisher is taken at the task's end over
``fisher_samples`` pairs of the task's own data, sized to a share of the budget by default
(see ``EWC``). Importances are used as estimated; ``normalise=True`` divides each task's
importance by its mean (scale-free strengths across model sizes), off by default.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

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


def per_sample_losses(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Each pair's term of CLIP's symmetric contrastive loss; their mean is the loss."""
    device = next(model.parameters()).device
    out = model(**{k: v.to(device) for k, v in batch.items()})
    target = torch.arange(out.logits_per_image.shape[0], device=device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (
        ce(out.logits_per_image, target, reduction="none")
        + ce(out.logits_per_text, target, reduction="none")
    )


def empirical_fisher(
    model: torch.nn.Module, batch: dict, chunk: int = 16, samples: int | None = None
) -> dict:
    """Sum over the first ``samples`` pairs of the batch (all by default) of each one's squared
    loss gradient, per trainable parameter; the rest of the batch are its negatives. The
    per-sample gradients come from one batched backward (``is_grads_batched``), ``chunk``
    samples at a time: each costs about a backward pass of the whole batch."""
    params = _named(model)
    fisher = {n: torch.zeros_like(p) for n, p in params.items()}
    losses = per_sample_losses(model, batch)
    n = len(losses) if samples is None else min(samples, len(losses))
    for lo in range(0, n, chunk):
        rows = torch.eye(len(losses), device=losses.device)[lo : min(lo + chunk, n)]
        grads = torch.autograd.grad(
            losses,
            list(params.values()),
            grad_outputs=rows,
            is_grads_batched=True,
            retain_graph=lo + chunk < n,
            allow_unused=True,
            materialize_grads=True,
        )
        for name, g in zip(params, grads, strict=True):
            fisher[name] += (g.detach() ** 2).sum(0)
    return fisher


MAX_FISHER_SAMPLES = 256


class EWC(Strategy):
    """Online EWC: at each task's end the per-sample empirical Fisher (mean over samples of the
    squared per-sample gradient) from ``fisher_samples`` pairs of the task's own data (global
    batches, on every process alike), the old Fisher decayed by ``gamma``; the pass's measured
    FLOPs are charged to the budget. Each sample costs about a backward pass of a batch, so by
    default (``fisher_samples=None``) EWC takes as many samples as spend ``fisher_share`` of
    the per-task budget (at least 1, at most ``MAX_FISHER_SAMPLES``)."""

    name = "ewc"

    def __init__(
        self,
        strength: float = 0.02,
        gamma: float = 0.9,
        fisher_samples: int | None = None,
        fisher_share: float = 0.25,
        normalise: bool = False,
    ):
        self.strength, self.gamma, self.normalise = strength, gamma, normalise
        self.fisher_samples, self.fisher_share = fisher_samples, fisher_share
        self.samples = fisher_samples or 64  # what a pass takes; sized by fit_extras
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self, model):
        return _quadratic(model, self.fisher, self.anchor, self.strength)

    def estimate(self, model, batches: Callable[[int], dict]) -> dict[str, torch.Tensor]:
        was_training = model.training
        model.train()
        total, count, i = None, 0, 0
        while count < self.samples:
            batch = batches(i)
            take = min(self.samples - count, len(batch["pixel_values"]))
            part = empirical_fisher(model, batch, samples=take)
            count, i = count + take, i + 1
            total = part if total is None else {n: total[n] + v for n, v in part.items()}
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        return {n: v / count for n, v in total.items()}

    def task_end(self, model, task: int, batches: Callable[[int], dict]) -> None:
        fisher = self.estimate(model, batches)
        if self.normalise:
            fisher = _normalised(fisher)
        self.fisher = {
            n: self.gamma * self.fisher[n] + f if n in self.fisher else f for n, f in fisher.items()
        }
        self.anchor = {n: p.detach().clone() for n, p in _named(model).items()}

    def fit_extras(self, cost, budget: float) -> None:
        if self.fisher_samples is not None:
            return
        self.samples = 1
        one = cost()
        self.samples = 2
        each = max(cost() - one, 1e-12)
        fits = math.floor((self.fisher_share * budget - (one - each)) / each)
        self.samples = max(1, min(MAX_FISHER_SAMPLES, fits))

    def options(self) -> dict:
        return {"fisher_samples": self.samples}

    def per_task_work(self, model, batches: Callable[[int], dict]) -> None:
        self.estimate(model, batches)

    def for_budget(self, model):
        state = copy.copy(self)
        params = _named(model)
        state.fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        state.anchor = {n: p.detach().clone() for n, p in params.items()}
        return state

    def extra_state_bytes(self, model) -> int:
        return 2 * sum(p.numel() * p.element_size() for p in _named(model).values())


class SI(Strategy):
    """Synaptic intelligence: each weight's contribution to the loss decrease along its path
    (-grad x update, summed over steps), divided by its squared total move at task end. The
    gradient is the task loss's over the global batch, before clipping: read after the backward
    (averaged across processes), less the penalty's analytic gradient."""

    name = "si"

    def __init__(self, strength: float = 0.02, damping: float = 1e-3, normalise: bool = False):
        self.strength, self.damping, self.normalise = strength, damping, normalise
        self.omega: dict[str, torch.Tensor] = {}
        self.path: dict[str, torch.Tensor] = {}
        self.previous: dict[str, torch.Tensor] = {}
        self.start: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.grad: dict[str, torch.Tensor] = {}

    def task_begin(self, model, task: int) -> None:
        params = _named(model)
        self.start = {n: p.detach().clone() for n, p in params.items()}
        self.previous = {n: p.detach().clone() for n, p in params.items()}
        self.path = {n: torch.zeros_like(p) for n, p in params.items()}

    @torch.no_grad()
    def after_backward(self, model) -> None:
        for name, p in _named(model).items():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if name in self.omega:
                g -= self.strength * self.omega[name] * (p - self.anchor[name])
            self.grad[name] = g

    def penalty(self, model):
        return _quadratic(model, self.omega, self.anchor, self.strength)

    @torch.no_grad()
    def after_update(self, model) -> None:
        for n, p in _named(model).items():
            if n in self.grad:
                self.path[n] -= self.grad[n] * (p - self.previous[n])
            self.previous[n].copy_(p)
        self.grad = {}

    @torch.no_grad()
    def task_end(self, model, task: int, batches) -> None:
        params = _named(model)
        new = {
            n: (self.path[n] / ((p - self.start[n]) ** 2 + self.damping)).clamp_min(0)
            for n, p in params.items()
        }
        if self.normalise:
            new = _normalised(new)
        self.omega = {n: self.omega.get(n, 0) + v for n, v in new.items()}
        self.anchor = {n: p.detach().clone() for n, p in params.items()}

    def for_budget(self, model):
        state = copy.copy(self)
        params = _named(model)
        state.omega = {n: torch.zeros_like(p) for n, p in params.items()}
        state.anchor = {n: p.detach().clone() for n, p in params.items()}
        return state

    def extra_state_bytes(self, model) -> int:
        return 6 * sum(p.numel() * p.element_size() for p in _named(model).values())
