"""The compute budget in memory-adjusted FLOPs (MAFs), turned into each method's steps per task.

A step's FLOPs (forward, loss, penalty and backward) are counted with torch's
``FlopCounterMode``. Its memory is the CUDA allocator's peak on a GPU; on a CPU, where no peak
can be read, it is a deterministic count: every parameter, plus a gradient and two AdamW moments
per trainable parameter, plus the method's own state on the accelerator (EWC's anchors and
Fisher, SI's importances; a merge's copies live in host memory and count nothing), plus the bytes
the autograd graph saves for backward (``saved_tensors_hooks``, parameters not counted twice).
MAFs = FLOPs x memory / full fine-tuning's memory. Every method gets full fine-tuning's
per-task MAFs; per-task extras (EWC's Fisher pass) come out of it first.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from emulate.common.errors import EmulateError
from emulate.continual.clip import clip_loss
from emulate.continual.methods.base import Strategy, trainable


class BudgetError(EmulateError, ValueError):
    """A budget that does not buy a method one step per task."""


@dataclass(frozen=True)
class StepCost:
    flops: int
    memory: int  # bytes


def _saved_bytes(model: torch.nn.Module, run) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


def measure_step(model: torch.nn.Module, batch: dict, strategy: Strategy) -> StepCost:
    """FLOPs and memory of one training step of ``model`` under ``strategy``; the weights are
    left untouched (gradients are cleared)."""

    def step():
        loss = clip_loss(model, batch)
        penalty = strategy.penalty(model)
        (loss if penalty is None else loss + penalty).backward()

    was_training = model.training
    model.train()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    model.zero_grad(set_to_none=True)
    if torch.cuda.is_available() and next(model.parameters()).is_cuda:
        torch.cuda.reset_peak_memory_stats()
        step()
        memory = torch.cuda.max_memory_allocated()
    else:
        saved = _saved_bytes(model, step)
        weights = sum(p.numel() * p.element_size() for p in model.parameters())
        train = sum(p.numel() * p.element_size() for p in trainable(model))
        memory = weights + 3 * train + strategy.extra_state_bytes(model) + saved
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return StepCost(int(counter.get_total_flops()), int(memory))


@dataclass(frozen=True)
class Plan:
    steps: int
    mafs_per_task: float
    step_mafs: float
    extra_mafs: float
    memory_ratio: float


def plan_steps(
    reference: StepCost, reference_steps: int, cost: StepCost, extra_passes: float, name: str
) -> Plan:
    """Steps per task that spend full fine-tuning's per-task MAFs (``reference_steps`` steps
    of ``reference``) on a method whose step costs ``cost``, after ``extra_passes`` extra
    forward-backward passes."""
    budget = reference_steps * float(reference.flops)
    ratio = cost.memory / reference.memory
    step_mafs = cost.flops * ratio
    extra = extra_passes * cost.flops * ratio
    steps = math.floor((budget - extra) / step_mafs + 1e-9)
    if steps < 1:
        raise BudgetError(
            f"a per-task budget of {reference_steps} full fine-tuning steps buys {name} no "
            f"step (one costs {step_mafs / reference.flops:.2f} of a fine-tuning step, plus "
            f"{extra / reference.flops:.1f} for its per-task extras); raise --steps or --budget"
        )
    return Plan(steps, steps * step_mafs + extra, step_mafs, extra, ratio)


def measure_extra_passes(
    model: torch.nn.Module, batch: dict, strategy: Strategy, cost: StepCost
) -> float:
    """The method's per-task work outside the steps, in steps of ``cost``: its FLOPs counted
    with ``batch`` standing for every batch it reads."""
    counter = FlopCounterMode(display=False)
    with counter:
        strategy.per_task_work(model, lambda i: batch)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / cost.flops


def _all_trainable(model: torch.nn.Module) -> torch.nn.Module:
    reference = copy.deepcopy(model)
    for p in reference.parameters():
        p.requires_grad_(True)
    return reference


def plan_method(
    model: torch.nn.Module, probe: dict, strategy: Strategy, reference_steps: int, name: str
) -> tuple[torch.nn.Module, Plan, StepCost]:
    """What every stream does before its first step: measure full fine-tuning's step on the
    global batch ``probe``, let the strategy prepare the model, size its per-task extras to the
    budget (``fit_extras``), measure its step with penalty and state present and its extras;
    returns (the model to train, the plan, full fine-tuning's step cost)."""
    reference = measure_step(_all_trainable(model), probe, Strategy())
    model = strategy.prepare(model)
    cost = measure_step(model, probe, strategy.for_budget(model))
    ratio = cost.memory / reference.memory

    def extra_in_reference_steps() -> float:
        passes = measure_extra_passes(model, probe, strategy, cost)
        return passes * cost.flops * ratio / reference.flops

    strategy.fit_extras(extra_in_reference_steps, reference_steps)
    extra = measure_extra_passes(model, probe, strategy, cost) or strategy.extra_passes()
    return model, plan_steps(reference, reference_steps, cost, extra, name), reference
