"""One stream run: order the concepts, cut them into tasks, fix each method's steps from the
compute budget, and run the one loop task by task, measuring KA and ZS after every task."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from emulate.common.errors import EmulateError
from emulate.continual.budget import measure_extra_passes, measure_step, plan_steps
from emulate.continual.clip import Clip
from emulate.continual.loop import new_accelerator, new_optimizer, train_steps
from emulate.continual.merge_rules import check_rule, check_weight
from emulate.continual.methods import check_method, make_strategy
from emulate.continual.methods.base import Strategy, UnwrappedHooks
from emulate.continual.metrics import chance, eval_sets, evaluate, summarize
from emulate.continual.mixture import BatchSampler, Mixture, TaskData, task_data
from emulate.continual.pretrain import World
from emulate.continual.schedules import check_schedule, cosine, learning_rate, warmup_steps
from emulate.continual.streams import check_ordering, cut, order_concepts
from emulate.continual.universe import dataset_split, pretraining_pool, replay_sample


@dataclass(frozen=True)
class RunConfig:
    method: str = "finetune"
    ordering: str = "random"
    tasks: int = 10
    mixture: Mixture = Mixture()
    schedule: str = "restart"
    seed: int = 0
    steps: int | None = None  # full fine-tuning steps per task (the budget); world default
    batch: int | None = None
    lr: float | None = None
    merge_rule: str = "interpolate"
    merge_weight: float = 0.5
    budget: float = 1.0  # a multiple of the per-task MAFs of ``steps`` fine-tuning steps

    def check(self) -> None:
        check_method(self.method)
        check_ordering(self.ordering)
        check_schedule(self.schedule)
        check_rule(self.merge_rule)
        check_weight(self.merge_weight)
        make_strategy(self.method, self.merge_rule, self.merge_weight)  # a rule it refuses
        if self.steps is not None and self.steps < 1:
            raise RunConfigError(
                f"--steps {self.steps} buys no training; give at least 1 full fine-tuning step "
                "per task, or leave --steps out for the world's default"
            )
        if not (math.isfinite(self.budget) and self.budget > 0):
            raise RunConfigError(
                f"--budget {self.budget} is not a positive multiple of the default per-task "
                "compute; give e.g. --budget 0.25, 1 or 4"
            )

    def reference_steps(self, default: int) -> int:
        """Full fine-tuning steps per task that the budget buys."""
        steps = round(self.budget * (default if self.steps is None else self.steps))
        if steps < 1:
            raise RunConfigError(
                f"--budget {self.budget} of {self.steps or default} steps per task buys no "
                "full fine-tuning step; raise --budget or --steps"
            )
        return steps


class RunConfigError(EmulateError, ValueError):
    """Steps or a budget that buy no training."""


class Data:
    """What every run on a world shares: the replay sample of the pool, the stream's training
    images, the test sets."""

    def __init__(self, world: World):
        u = world.universe
        self.pool = replay_sample(u, pretraining_pool(u))  # what pretraining replay draws on
        self.train = {d.name: dataset_split(u, d.name, "train") for d in u.adapt}
        self.tests = eval_sets(u)


def run_stream(
    world: World,
    config: RunConfig,
    data: Data | None = None,
    on_event: Callable[[tuple], None] | None = None,
) -> dict:
    """Run ``config`` on ``world``; the JSON-ready result (trajectory, summary, budget)."""
    config.check()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared CPU, two OpenMP threads run slower than one
    try:
        return _run(world, config, data, on_event)
    finally:
        torch.set_num_threads(threads)


def _run(world: World, config: RunConfig, data: Data | None, on_event) -> dict:
    started = time.time()
    size, universe = world.size, world.universe
    steps_ft = config.reference_steps(size.stream_steps)
    batch_size = config.batch or size.stream_batch
    lr = config.lr or size.stream_lr
    data = data or Data(world)
    clip = world.clip()
    tasks = cut(
        order_concepts(universe, config.ordering, config.seed, clip, data.train), config.tasks
    )
    torch.manual_seed(config.seed)
    sampler = BatchSampler(universe, data.pool, config.mixture, batch_size, config.seed, 0.0)

    def batches_for(
        current: TaskData,
        buffer: TaskData,
        task: int,
        offset: int = 0,
        source: BatchSampler = sampler,
    ):
        def batches(step: int) -> dict:
            images, captions = source.sources(current, buffer, task, offset + step)
            return {**clip.tokens(captions), "pixel_values": clip.pixels(images)}

        return batches

    start = {**evaluate(clip, data.tests, tasks=tasks), "chance": chance(data.tests)}
    strategy: Strategy = make_strategy(config.method, config.merge_rule, config.merge_weight)
    probe = batches_for(task_data(data.train, tasks[0]), task_data(data.train, []), 0)(0)
    reference = measure_step(_all_trainable(clip.model), probe, Strategy())
    model = strategy.prepare(clip.model)
    cost = measure_step(model, probe, strategy.for_budget(model))  # penalty and state present
    extra = measure_extra_passes(model, probe, strategy, cost) or strategy.extra_passes()
    plan = plan_steps(reference, steps_ft, cost, extra, config.method)

    accelerator = new_accelerator()
    sampler.rank = accelerator.process_index
    model = accelerator.prepare(model)
    report = on_event or (lambda event: None)
    label = f"{config.method}"
    report(("add", label, plan.steps * config.tasks))
    trajectory = []
    fisher_sampler = BatchSampler(
        universe, data.pool, Mixture(0, 1, 0), batch_size, config.seed + 1, 0.0
    )

    def measure(task: int) -> None:
        unwrapped = accelerator.unwrap_model(model)
        point = evaluate(
            Clip(strategy.eval_model(unwrapped), clip.tokenizer, clip.image_processor),
            data.tests,
            tasks=tasks,
        )
        trajectory.append({"task": task + 1, **point})

    if config.method == "joint":
        _joint(
            accelerator,
            model,
            strategy,
            config,
            plan.steps,
            lr,
            data,
            tasks,
            batches_for,
            measure,
            lambda s, v: report(("step", label, s, v)),
        )
    else:
        for t, concepts in enumerate(tasks):
            current = task_data(data.train, concepts)
            buffer = task_data(data.train, [c for task in tasks[:t] for c in task])
            unwrapped = accelerator.unwrap_model(model)
            strategy.task_begin(unwrapped, t)
            optimizer = accelerator.prepare(new_optimizer(model, lr * strategy.lr_scale))
            train_steps(
                accelerator,
                model,
                optimizer,
                batches_for(current, buffer, t),
                plan.steps,
                lambda s, t=t: learning_rate(
                    config.schedule,
                    t,
                    s,
                    plan.steps,
                    lr * strategy.lr_scale,
                    lr * strategy.lr_scale / 20,
                ),
                UnwrappedHooks(strategy, accelerator.unwrap_model),
                lambda s, v, t=t: report(("step", label, t * plan.steps + s, v)),
            )
            fisher = batches_for(current, TaskData(current.images[:0], []), t, 0, fisher_sampler)
            strategy.task_end(unwrapped, t, fisher)
            measure(t)
    result = summarize(start, trajectory)
    result.update(
        {
            "method": config.method,
            "ordering": config.ordering,
            "tasks": config.tasks,
            "mixture": [config.mixture.pretrain, config.mixture.current, config.mixture.buffer],
            "schedule": config.schedule,
            "seed": config.seed,
            "steps_per_task": plan.steps,
            "mafs_per_task": plan.mafs_per_task,
            "budget": {
                **asdict(plan),
                "reference_steps": steps_ft,
                "reference_flops_per_step": reference.flops,
                "reference_memory_bytes": reference.memory,
            },
            "start_datasets": start["datasets"],
            "final_datasets": trajectory[-1]["datasets"],
            "stream": tasks,
            "seconds": round(time.time() - started, 1),
        }
    )
    return result


def _all_trainable(model: torch.nn.Module) -> torch.nn.Module:
    reference = copy.deepcopy(model)
    for p in reference.parameters():
        p.requires_grad_(True)
    return reference


def _joint(
    accelerator, model, strategy, config, steps, lr, data, tasks, batches_for, measure, on_step
) -> None:
    """The upper bound: all the stream's data at once, as many samples as the stream, one
    cosine over all steps; measured at each task's worth of steps for the plot."""
    everything = task_data(data.train, [c for task in tasks for c in task])
    empty = TaskData(everything.images[:0], [])
    total = steps * config.tasks
    warmup = warmup_steps(total)
    optimizer = accelerator.prepare(new_optimizer(model, lr))
    for t in range(config.tasks):
        train_steps(
            accelerator,
            model,
            optimizer,
            batches_for(everything, empty, 0, t * steps),
            steps,
            lambda s, t=t: cosine(t * steps + s, total, warmup, lr, lr / 20),
            strategy,
            lambda s, v, t=t: on_step(t * steps + s, v),
        )
        measure(t)
