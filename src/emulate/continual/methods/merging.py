"""Model merging across the stream: EMA-merge, ZS-merge and FT-merge, with two merge rules.

- interpolation: merged <- (1 - w) * merged + w * new;
- task arithmetic: merged <- merged + w * (new - start), the task vector of the finished task
  (``start`` is what that task began from) added at scale ``w``.
EMA-merge trains from the running merge and merges every task into it (the merge is both what is
measured and the next start); ZS-merge starts every task from the original weights and measures
the running merge; FT-merge trains on like fine-tuning and measures a merge of the latest
weights with the original ones.

Each method holds only the copies of the weights it needs (EMA-merge the running merge, which is
also every task's start, so both rules coincide for it; ZS-merge the original weights and the
running merge; FT-merge the original), and holds them in host memory, as the paper's reference
code does: a merge happens once per task, so its copies never sit on the accelerator during a
step, and the budget charges merging methods no memory beyond fine-tuning's. Their steps are
fine-tuning's; the merge itself is a few element-wise operations per weight, nothing beside a
step's FLOPs.
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
    """A copy of the weights in host memory."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _Merging(Strategy):
    def __init__(self, rule: str = "interpolation", weight: float = 0.5):
        if rule not in RULES:
            raise EmulateError(f"unknown merge rule {rule!r}; choose one of {', '.join(RULES)}")
        self.rule, self.weight = rule, weight
        self.original: dict = {}
        self.merged: dict = {}
        self.shadow: torch.nn.Module | None = None

    def _evaluated(self, model, state: dict) -> torch.nn.Module:
        if self.shadow is None:
            self.shadow = copy.deepcopy(model)
        self.shadow.load_state_dict(state)
        return self.shadow.eval()


class EMAMerge(_Merging):
    name = "ema-merge"

    def prepare(self, model):
        self.merged = _state(model)
        return model

    def task_end(self, model, task, batches) -> None:
        # every task starts from the running merge, so it is also the task vector's base
        self.merged = merge(self.merged, _state(model), self.merged, self.rule, self.weight)
        model.load_state_dict(self.merged)


class ZSMerge(_Merging):
    name = "zs-merge"

    def prepare(self, model):
        self.original = _state(model)
        self.merged = _state(model)
        return model

    def task_begin(self, model, task: int) -> None:
        model.load_state_dict(self.original)

    def task_end(self, model, task, batches) -> None:
        self.merged = merge(self.merged, _state(model), self.original, self.rule, self.weight)

    def eval_model(self, model):
        return self._evaluated(model, self.merged)


class FTMerge(_Merging):
    name = "ft-merge"

    def prepare(self, model):
        self.original = _state(model)
        return model

    def eval_model(self, model):
        return self._evaluated(
            model, merge(self.original, _state(model), self.original, self.rule, self.weight)
        )
