"""The one update loop: contrastive CLIP steps through Accelerate, with a strategy's hooks, and
the one task loop that every stream (synthetic world or real files) runs its methods through.

``accelerator.prepare`` and ``accelerator.backward`` make the same loop run on one CPU or, under
``accelerate launch``, data-parallel on several processes. A batch function always yields the
GLOBAL batch; each process trains on its slice, and the contrastive loss gathers the other
slices' embeddings (``clip_loss``), so N processes take the steps one process takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from emulate.common.errors import EmulateError
from emulate.continual.clip import clip_loss
from emulate.continual.methods.base import Strategy, trainable


class ProcessError(EmulateError, ValueError):
    """A global batch that does not split evenly over the processes."""


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


def check_split(batch: int, processes: int) -> None:
    if batch % processes:
        raise ProcessError(
            f"a global batch of {batch} does not split over {processes} processes; give a "
            "batch that is a multiple of the process count"
        )


def local_slice(batch: dict, rank: int, processes: int) -> dict:
    """This process's share of a global batch (all of it on one process)."""
    if processes == 1:
        return batch
    size = len(batch["pixel_values"])
    check_split(size, processes)
    share = size // processes
    return {k: v[rank * share : (rank + 1) * share] for k, v in batch.items()}


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
    """``steps`` updates of ``model`` (already prepared) on global batches ``batches(step)``;
    returns the mean loss of the last 20. The strategy's hooks get the unwrapped model: under
    data parallelism the loop holds the wrapper, whose parameter names are ``module.``-prefixed.
    """
    model.train()
    params = trainable(model)
    plain = accelerator.unwrap_model(model)
    rank, processes = accelerator.process_index, accelerator.num_processes
    recent: list[torch.Tensor] = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        batch = local_slice(batches(step), rank, processes)
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
        loss = clip_loss(model, batch, processes)
        penalty = strategy.penalty(plain)
        total = loss if penalty is None else loss + penalty
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(total)
        strategy.after_backward(plain)
        accelerator.clip_grad_norm_(params, 1.0)
        optimizer.step()
        strategy.after_update(plain)
        recent = (recent + [loss.detach()])[-20:]
        if on_step:
            on_step(step + 1, float(recent[-1]))
    model.eval()
    return float(torch.stack(recent).mean()) if recent else 0.0


@dataclass
class Task:
    """One task of a stream: its global training batches and its own data (EWC's Fisher)."""

    batches: Callable[[int], dict]
    own_data: Callable[[int], dict]


def run_tasks(
    accelerator,
    model: torch.nn.Module,
    strategy: Strategy,
    tasks: Iterable[Task],
    steps: int,
    lr: float,
    lr_at: Callable[[int, int, float], float],
    measure: Callable[[int, torch.nn.Module], None],
    on_step: Callable[[int, float], None] | None = None,
    one_optimizer: bool = False,
) -> list[float]:
    """Every task through ``train_steps`` with the strategy's task hooks around it, as
    Avalanche's and Mammoth's strategies wrap one training loop: ``task_begin``, a fresh
    optimiser (one for the whole stream if ``one_optimizer``), the steps at ``lr_at(task, step,
    peak)`` with peak = ``lr`` x the method's ``lr_scale``, ``task_end`` (merges,
    importances), then ``measure(task, eval_model)``. Returns each task's training loss (mean
    of its last 20 steps), a number two process counts can be compared on to float precision."""
    peak = lr * strategy.lr_scale
    optimizer, losses = None, []
    for t, task in enumerate(tasks):
        plain = accelerator.unwrap_model(model)
        strategy.task_begin(plain, t)
        if optimizer is None or not one_optimizer:
            optimizer = accelerator.prepare(new_optimizer(model, peak))
        loss = train_steps(
            accelerator,
            model,
            optimizer,
            task.batches,
            steps,
            lambda s, t=t: lr_at(t, s, peak),
            strategy,
            None if on_step is None else (lambda s, v, t=t: on_step(t * steps + s, v)),
        )
        strategy.task_end(plain, t, task.own_data)
        measure(t, strategy.eval_model(plain))
        losses.append(loss)
    return losses
