"""Model merging across the stream: EMA-merge, ZS-merge and FT-merge, with two merge rules.

- interpolation: merged <- (1 - w) * merged + w * new;
- task arithmetic: merged <- merged + w * (new - start), the task vector of the finished task
  (``start`` is what that task began from) added at scale ``w``.
EMA-merge trains from the running merge and merges every task into it (the merge is both what is
measured and the next start); ZS-merge starts every task from the original weights and measures
the running merge; FT-merge trains on like fine-tuning and measures a merge of the latest
weights with the original ones.
"""

from __future__ import annotations

import copy

import torch

from emulate.common.errors import EmulateError
from emulate.continual.methods.base import Strategy

RULES = ("interpolation", "task-arithmetic")


def merge(merged: dict, new: dict, start: dict, rule: str, weight: float) -> dict:
    """One merge step over state dicts (floating-point entries only are merged)."""
    if rule not in RULES:
        raise EmulateError(f"unknown merge rule {rule!r}; choose one of {', '.join(RULES)}")
    out = {}
    for k, m in merged.items():
        if not torch.is_floating_point(m):
            out[k] = new[k].clone()
        elif rule == "interpolation":
            out[k] = (1 - weight) * m + weight * new[k]
        else:
            out[k] = m + weight * (new[k] - start[k])
    return out


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _Merging(Strategy):
    def __init__(self, rule: str = "interpolation", weight: float = 0.5):
        if rule not in RULES:
            raise EmulateError(f"unknown merge rule {rule!r}; choose one of {', '.join(RULES)}")
        self.rule, self.weight = rule, weight
        self.original: dict = {}
        self.merged: dict = {}
        self.task_start: dict = {}
        self.shadow: torch.nn.Module | None = None

    def prepare(self, model):
        self.original = _state(model)
        self.merged = _state(model)
        return model

    def task_begin(self, model, task: int) -> None:
        self.task_start = _state(model)

    def _evaluated(self, model, state: dict) -> torch.nn.Module:
        if self.shadow is None:
            self.shadow = copy.deepcopy(model)
        self.shadow.load_state_dict(state)
        return self.shadow.eval()

    def extra_state_bytes(self, model) -> int:
        return 2 * sum(v.numel() * v.element_size() for v in model.state_dict().values())


class EMAMerge(_Merging):
    name = "ema-merge"

    def task_end(self, model, task, batches) -> None:
        self.merged = merge(self.merged, _state(model), self.task_start, self.rule, self.weight)
        model.load_state_dict(self.merged)


class ZSMerge(_Merging):
    name = "zs-merge"

    def task_begin(self, model, task: int) -> None:
        model.load_state_dict(self.original)
        self.task_start = self.original

    def task_end(self, model, task, batches) -> None:
        self.merged = merge(self.merged, _state(model), self.task_start, self.rule, self.weight)

    def eval_model(self, model):
        return self._evaluated(model, self.merged)


class FTMerge(_Merging):
    name = "ft-merge"

    def eval_model(self, model):
        return self._evaluated(
            model, merge(self.original, _state(model), self.original, self.rule, self.weight)
        )
