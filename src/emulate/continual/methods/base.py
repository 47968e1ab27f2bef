"""The strategy interface: hooks the one update loop calls, and what a method costs.

A method never copies the loop; it chooses which parameters train (``prepare``), adds a term to
the loss (``penalty``), watches each gradient and update (``after_backward``, ``after_update``),
and acts at task boundaries
(``task_begin``, ``task_end``), e.g. merging weights or estimating a Fisher. ``eval_model`` is
what KA and ZS are measured on (a merge, for the merging methods).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class Strategy:
    name = "finetune"
    lr_scale = 1.0  # multiplies the stream's base learning rate

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Called once, before the loop: returns the module to train (maybe wrapped)."""
        return model

    def task_begin(self, model: torch.nn.Module, task: int) -> None:
        """Before the first step of ``task``."""

    def penalty(self, model: torch.nn.Module) -> torch.Tensor | None:
        """A term added to the contrastive loss (regularisers), or None."""
        return None

    def after_backward(self, model: torch.nn.Module) -> None:
        """After every backward, before clipping: ``p.grad`` holds the gradient of loss +
        penalty over the global batch (averaged across processes under data parallelism)."""

    def after_update(self, model: torch.nn.Module) -> None:
        """After every optimiser step (gradients are still there)."""

    def task_end(self, model: torch.nn.Module, task: int, batches: Callable[[int], dict]) -> None:
        """After the last step of ``task``; ``batches(i)`` yields the task's data."""

    def eval_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The weights KA and ZS are measured on."""
        return model

    # What the method costs beyond a plain step, for the compute budget.
    def extra_passes(self) -> int:
        """Forward-backward passes per task outside the training steps, where not measured."""
        return 0

    def fit_extras(self, cost: Callable[[], float], budget: float) -> None:
        """Size the per-task work outside the steps to a budget of ``budget`` full fine-tuning
        steps, where the method sizes it itself; ``cost()`` is its current cost in those steps."""

    def options(self) -> dict:
        """The method's settings that a run reports (e.g. EWC's Fisher samples)."""
        return {}

    def per_task_work(self, model: torch.nn.Module, batches: Callable[[int], dict]) -> None:
        """The per-task work outside the steps (EWC's Fisher), run for its measured FLOPs;
        it leaves the method's state unchanged."""

    def for_budget(self, model: torch.nn.Module) -> Strategy:
        """The strategy with the state it has mid-stream (penalty terms present), for measuring
        a step's cost as it is during training."""
        return self

    def extra_state_bytes(self, model: torch.nn.Module) -> int:
        """Accelerator memory the method holds beyond the model and optimiser (anchors,
        importances); what it keeps in host memory between tasks costs nothing here."""
        return 0


def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def train_only(model: torch.nn.Module, keep: Callable[[str, torch.nn.Module], bool]) -> None:
    """Freeze everything except the parameters for which ``keep(name, owning module)``."""
    for module_name, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            p.requires_grad_(keep(full, module))
