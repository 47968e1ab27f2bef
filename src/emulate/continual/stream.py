"""One stream run: order the concepts, cut them into tasks, fix each method's steps from the
compute budget, and run the one loop task by task, measuring KA and ZS after every task."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from emulate.common.errors import EmulateError
from emulate.continual.budget import plan_method
from emulate.continual.clip import Clip, TokenCache
from emulate.continual.loop import Task, check_split, new_accelerator, run_tasks
from emulate.continual.merge_rules import check_rule, check_weight
from emulate.continual.methods import check_method, make_strategy
from emulate.continual.methods.base import Strategy
from emulate.continual.metrics import chance, eval_sets, evaluate, summarize
from emulate.continual.mixture import BatchSampler, Mixture, TaskData, task_data
from emulate.continual.pretrain import World
from emulate.continual.schedules import check_schedule, cosine, learning_rate, warmup_steps
from emulate.continual.streams import check_ordering, cut, order_concepts
from emulate.continual.universe import (
    ATTRIBUTE_TEMPLATE,
    TEMPLATES,
    Universe,
    dataset_split,
    pretraining_pool,
    replay_sample,
)


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
    fisher_samples: int | None = None  # EWC's Fisher pass; None: a share of the budget

    def check(self) -> None:
        check_method(self.method)
        check_ordering(self.ordering)
        check_schedule(self.schedule)
        check_rule(self.merge_rule)
        check_weight(self.merge_weight)
        make_strategy(self.method, self.merge_rule, self.merge_weight)  # a rule it refuses
        if self.fisher_samples is not None and self.fisher_samples < 1:
            raise RunConfigError(
                f"--fisher-samples {self.fisher_samples} takes no sample; give at least 1, or "
                "leave it out to size EWC's Fisher pass to a quarter of the budget"
            )
        if self.steps is not None and self.steps < 1:
            raise RunConfigError(
                f"--steps {self.steps} buys no training; give at least 1 full fine-tuning step "
                "per task, or leave --steps out for the world's default"
            )
        if not 0 <= self.seed < 2**32:
            raise RunConfigError(f"seed {self.seed} is out of range: give 0 to {2**32 - 1}")
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


def all_captions(universe: Universe) -> list[str]:
    """Every caption `universe.caption` can write, for every concept: what a stream's token
    cache tokenizes in one call before the first step."""
    return [
        template.format(name=name, colour=c.colour, pattern=c.pattern, shape=c.shape)
        for name, c in universe.concepts.items()
        for template in (*TEMPLATES, ATTRIBUTE_TEMPLATE)
    ]


class WorldBatches:
    """Global batches of a world's stream (every process draws the same one and trains on its
    slice): the sampler's images and captions, token ids from a ``TokenCache``."""

    def __init__(self, clip: Clip, universe: Universe | None = None):
        self.clip, self.tokens = clip, TokenCache(clip)
        if universe is not None:  # every caption tokenized in one call, not one call a step
            self.tokens(all_captions(universe))

    def __call__(
        self, current: TaskData, buffer: TaskData, task: int, offset: int = 0, sampler=None
    ) -> Callable[[int], dict]:
        def batches(step: int) -> dict:
            images, captions = sampler.sources(current, buffer, task, offset + step)
            return {**self.tokens(captions), "pixel_values": self.clip.pixels(images)}

        return batches


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
    fisher_sampler = BatchSampler(
        universe, data.pool, Mixture(0, 1, 0), batch_size, config.seed + 1, 0.0
    )
    nothing = task_data(data.train, [])
    batches_for = WorldBatches(clip, universe)
    fisher = functools.partial(batches_for, sampler=fisher_sampler)

    start = {**evaluate(clip, data.tests, tasks=tasks), "chance": chance(data.tests)}
    strategy: Strategy = make_strategy(
        config.method, config.merge_rule, config.merge_weight, config.fisher_samples
    )
    probe = batches_for(task_data(data.train, tasks[0]), nothing, 0, sampler=sampler)(0)
    model, plan, reference = plan_method(clip.model, probe, strategy, steps_ft, config.method)

    accelerator = new_accelerator()
    check_split(batch_size, accelerator.num_processes)
    model = accelerator.prepare(model)
    report = on_event or (lambda event: None)
    label = f"{config.method}"
    report(("add", label, plan.steps * config.tasks))
    trajectory = []

    def measure(task: int, evaluated: torch.nn.Module) -> None:
        point = evaluate(
            Clip(evaluated, clip.tokenizer, clip.image_processor), data.tests, tasks=tasks
        )
        trajectory.append({"task": task + 1, **point})

    def stream_tasks():
        for t, concepts in enumerate(tasks):
            current = task_data(data.train, concepts)
            buffer = task_data(data.train, [c for task in tasks[:t] for c in task])
            own = fisher(current, nothing, t)
            yield Task(batches_for(current, buffer, t, sampler=sampler), own)

    on_step = lambda s, v: report(("step", label, s, v))  # noqa: E731
    if config.method == "joint":
        # the upper bound: all the stream's data at once, as many samples as the stream, one
        # cosine over all steps; measured at each task's worth of steps for the plot
        everything = task_data(data.train, [c for task in tasks for c in task])
        total = plan.steps * config.tasks
        joint_tasks = [
            Task(batches_for(everything, nothing, 0, t * plan.steps, sampler), None)
            for t in range(config.tasks)
        ]

        def joint_lr(t: int, s: int, peak: float) -> float:
            return cosine(t * plan.steps + s, total, warmup_steps(total), peak, peak / 20)

        losses = run_tasks(
            accelerator,
            model,
            strategy,
            joint_tasks,
            plan.steps,
            lr,
            joint_lr,
            measure,
            on_step,
            one_optimizer=True,
        )
    else:

        def stream_lr(t: int, s: int, peak: float) -> float:
            return learning_rate(config.schedule, t, s, plan.steps, peak, peak / 20)

        losses = run_tasks(
            accelerator,
            model,
            strategy,
            stream_tasks(),
            plan.steps,
            lr,
            stream_lr,
            measure,
            on_step,
        )
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
                "global_batch": batch_size,
            },
            "options": strategy.options(),
            "train_loss": losses,
            "processes": accelerator.num_processes,
            "start_datasets": start["datasets"],
            "final_datasets": trajectory[-1]["datasets"],
            "stream": tasks,
            "seconds": round(time.time() - started, 1),
        }
    )
    return result
