"""Model merging across the stream: EMA-merge, ZS-merge and FT-merge, under any merge rule of
``emulate.continual.merge_rules`` (task vectors measured from the original weights).

EMA-merge trains from the running merge and merges every task into it (the merge is both what is
measured and the next start); ZS-merge starts every task from the original weights and measures
the running merge; FT-merge trains on like fine-tuning and measures a merge of the latest
weights with the original ones. Two rules are refused where they coincide with another or do
nothing: task arithmetic for EMA-merge (the task starts from the merge, so merge + w * (new -
merge) is interpolation) and for FT-merge (original + w * (latest - original) is interpolation),
and MagMax for FT-merge (of the original's zero vector and the latest's, the latest always wins).

Each method holds only the copies of the weights it needs (the original weights, and the running
merge for EMA- and ZS-merge), in host memory, as the paper's reference code does: a merge happens
once per task, so its copies never sit on the accelerator during a step, and the budget charges
merging methods no memory beyond fine-tuning's. Their steps are fine-tuning's; the merge itself
is a few element-wise operations per weight, nothing beside a step's FLOPs.
"""

from __future__ import annotations

import copy

import torch

from emulate.continual.merge_rules import MergeError, check_rule, check_weight, merge
from emulate.continual.methods.base import Strategy


def _state(model: torch.nn.Module) -> dict:
    """A copy of the weights in host memory."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


class _Merging(Strategy):
    refused: tuple[str, ...] = ()

    def __init__(self, rule: str = "interpolate", weight: float = 0.5):
        self.rule, self.weight = check_rule(rule), check_weight(weight)
        if self.rule in self.refused:
            raise MergeError(
                f"--merge {rule} does nothing new for {self.name}: it coincides with "
                "interpolation or returns the latest weights (see its docstring); choose one of "
                "interpolate, ties, dare, slerp"
                + (", magmax" if "magmax" not in self.refused else "")
            )
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
    refused = ("task-arithmetic",)

    def prepare(self, model):
        self.original = _state(model)
        self.merged = _state(model)
        return model

    def task_end(self, model, task, batches) -> None:
        # every task starts from the running merge
        self.merged = merge(
            self.merged, _state(model), self.original, self.merged, self.rule, self.weight
        )
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
        self.merged = merge(
            self.merged, _state(model), self.original, self.original, self.rule, self.weight
        )

    def eval_model(self, model):
        return self._evaluated(model, self.merged)


class FTMerge(_Merging):
    name = "ft-merge"
    refused = ("task-arithmetic", "magmax")

    def prepare(self, model):
        self.original = _state(model)
        return model

    def eval_model(self, model):
        return self._evaluated(
            model,
            merge(
                self.original, _state(model), self.original, self.original, self.rule, self.weight
            ),
        )
