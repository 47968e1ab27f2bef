"""A stream over real data: ``ROOT/stream/`` cut into tasks, ``ROOT/eval/`` never trained on.

KA is zero-shot accuracy on a seeded held-out share of every stream class, over all the stream's
classes; ZS the same on every ``ROOT/eval/`` image over all of its classes. Pretraining replay
draws from ``--replay PATH`` (any layout of ``datasources``) or is off, its share of each batch
then going to the task and the buffer. Captions and pixels are made once per image (``Batches``)
so a step costs the model's time, not Python's. The synthetic world is never consulted.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from emulate.common.errors import EmulateError
from emulate.continual.budget import plan_method
from emulate.continual.clip import Clip
from emulate.continual.datasources import Labelled, read_source
from emulate.continual.loop import Task, check_split, new_accelerator, run_tasks
from emulate.continual.metrics import EvalSets, evaluate, summarize
from emulate.continual.mixture import Mixture
from emulate.continual.schedules import learning_rate
from emulate.continual.universe import ZERO_SHOT_TEMPLATES as TEMPLATES
from emulate.continual.universe import ImageSet

TEST_SHARE = 0.25
DEFAULTS = {"steps": 20, "batch": 16, "lr": 1e-5}


class RealDataError(EmulateError, ValueError):
    """Real data that a stream cannot be run on, or an option real data does not support."""


@dataclass
class RealData:
    train: Labelled  # the stream's training share
    test: ImageSet  # the stream's held-out share (KA)
    evaluation: ImageSet  # every ROOT/eval image (ZS)
    replay: Labelled | None
    replay_source: str


def _split(data: Labelled, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 11])
    train, test = [], []
    for i, name in enumerate(data.names):
        rows = np.flatnonzero(data.labels == i)
        if len(rows) < 2:
            raise RealDataError(
                f"stream class {name!r} has {len(rows)} image; give every class at least two "
                "(one is held out for testing)"
            )
        rows = rows[rng.permutation(len(rows))]
        cut = max(1, round(TEST_SHARE * len(rows)))
        test += sorted(rows[:cut])
        train += sorted(rows[cut:])
    return np.array(train), np.array(test)


def _subset(data: Labelled, rows: np.ndarray) -> Labelled:
    return Labelled(
        data.images[rows], data.labels[rows], data.names, [data.captions[i] for i in rows]
    )


def _check_captions(data: Labelled, where: Path) -> None:
    """Captions that name no class the run evaluates would train nothing it measures."""
    given = [
        (c, data.names[label]) for c, label in zip(data.captions, data.labels, strict=True) if c
    ]
    if given and not any(name.lower() in c.lower() for c, name in given):
        raise RealDataError(
            f"no caption in {where} names its image's class ({', '.join(data.names[:5])}...); "
            "write captions that mention the class, or drop the .txt files to caption from "
            "templates over the class names"
        )


def load_real(root: str | Path, replay: str | Path | None, image_size: int, seed: int) -> RealData:
    root = Path(root)
    for part in ("stream", "eval"):
        if not (root / part).is_dir():
            raise RealDataError(
                f"{root} has no {part}/ folder; lay out {root}/stream/ (trained on, cut into "
                f"tasks) and {root}/eval/ (never trained on)"
            )
    stream = read_source(root / "stream", image_size)
    _check_captions(stream, root / "stream")
    evaluation = read_source(root / "eval", image_size)
    train, test = _split(stream, seed)
    pool = read_source(replay, image_size) if replay else None
    return RealData(
        _subset(stream, train),
        ImageSet(stream.images[test], stream.labels[test], stream.names),
        ImageSet(evaluation.images, evaluation.labels, evaluation.names),
        pool,
        str(replay) if replay else "off",
    )


class Batches:
    """Seeded batches of one set: every caption tokenized once and every image's pixels made
    once; a batch indexes them. Batches are global: every process draws the same one and the
    loop gives each its slice, so the steps are global steps at any process count."""

    def __init__(self, clip: Clip, data: Labelled, seed: int):
        texts = sorted(
            {c for c in data.captions if c}
            | {t.format(name=n) for n in data.names for t in TEMPLATES}
        )
        self.index = {t: i for i, t in enumerate(texts)}
        self.tokens = dict(clip.tokens(texts))
        self.clip, self.data, self.seed = clip, data, seed

    def caption_rows(self, rows: np.ndarray, rng) -> list[int]:
        out = []
        for i in rows:
            text = self.data.captions[i]
            if not text:
                name = self.data.names[self.data.labels[i]]
                text = TEMPLATES[int(rng.integers(len(TEMPLATES)))].format(name=name)
            out.append(self.index[text])
        return out

    def take(self, rows: np.ndarray, rng) -> dict[str, torch.Tensor]:
        text_rows = torch.tensor(self.caption_rows(rows, rng))
        batch = {k: v[text_rows] for k, v in self.tokens.items()}
        if "attention_mask" in batch:  # trimmed as the tokenizer's padding=True pads a batch
            width = int(batch["attention_mask"].sum(1).max())
            batch = {k: v[:, :width] for k, v in batch.items()}
        return {**batch, "pixel_values": self.clip.pixels(self.data.images[rows])}


def _cat(parts: list[dict]) -> dict[str, torch.Tensor]:
    parts = [p for p in parts if p]
    width = max(p["input_ids"].shape[1] for p in parts)

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1])) if t.dim() == 2 else t

    return {k: torch.cat([pad(p[k]) for p in parts]) for k in parts[0]}


@dataclass
class Sampler:
    """Batches of the mixture: replay pool, current task, buffer of all earlier tasks."""

    train: Batches
    replay: Batches | None
    mixture: Mixture
    batch: int
    seed: int

    def batches(self, current: np.ndarray, buffer: np.ndarray, task: int):
        def batch(step: int) -> dict:
            rng = np.random.default_rng([self.seed, task, step])
            n_pool, n_cur, n_buf = self.mixture.counts(self.batch, len(buffer) > 0)
            parts = []
            if n_pool:
                rows = rng.integers(0, len(self.replay.data), n_pool)
                parts.append((self.replay, rows))
            for rows, n in ((current, n_cur), (buffer, n_buf)):
                if n and len(rows):
                    parts.append((self.train, rows[rng.integers(0, len(rows), n)]))
            return _cat([source.take(rows, rng) for source, rows in parts])

        return batch


def mixture_for(mixture: Mixture, replay: bool) -> Mixture:
    """With replay off its share goes to the task and the buffer, in their proportion."""
    if replay or not mixture.pretrain:
        return mixture
    rest = mixture.current + mixture.buffer
    if rest <= 0:
        raise RealDataError("--mix gives every sample to replay but no --replay PATH is given")
    return Mixture(0.0, mixture.current / rest, mixture.buffer / rest)


def order_classes(names: list[str], ordering: str, seed: int) -> list[str]:
    if ordering not in ("random", "random-reverse"):
        raise RealDataError(
            f"ordering {ordering!r} needs the synthetic world; real data takes --ordering random"
        )
    order = [names[i] for i in np.random.default_rng([seed, 77]).permutation(len(names))]
    return order[::-1] if ordering.endswith("-reverse") else order


def eval_sets(data: RealData) -> EvalSets:
    return EvalSets({"stream": data.test}, {"eval": data.evaluation})


def run_files(world, root, model: str | None, replay, config) -> dict:
    """``run --data ROOT --model M [--replay PATH]``: read the files, load the model, run."""
    from emulate.continual.clip import load_clip

    if world is not None or root is None or not model:
        raise RealDataError(
            "give either --world DIR (a built world) or --data ROOT with --model M (an HF CLIP "
            "folder or open_clip:ARCH[:FILE]), not both"
        )
    clip = load_clip(model)
    data = load_real(root, replay, clip.image_size, config.seed)
    names = {"data": str(root), "model": model, "replay": data.replay_source}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a shared CPU, two OpenMP threads run slower than one
    try:
        return run_real(clip, data, config, names)
    finally:
        torch.set_num_threads(threads)


def describe(result: dict) -> str:
    return f"replay: {result['replay']}; model: {result['model']}; data: {result['data']}"


def run_real(clip: Clip, data: RealData, config, names: dict[str, str]) -> dict:
    """``config`` (a ``stream.RunConfig``) over ``data``; the same JSON keys as a world run."""
    from emulate.continual.methods import make_strategy
    from emulate.continual.streams import cut

    started = time.time()
    config.check()
    if config.method == "joint":
        raise RealDataError("joint training is run on a world only; choose a stream method")
    steps_ft = config.reference_steps(DEFAULTS["steps"])
    batch = config.batch or DEFAULTS["batch"]
    tasks = cut(order_classes(data.train.names, config.ordering, config.seed), config.tasks)
    torch.manual_seed(config.seed)
    accelerator = new_accelerator()
    check_split(batch, accelerator.num_processes)
    sampler = Sampler(
        Batches(clip, data.train, config.seed),
        Batches(clip, data.replay, config.seed) if data.replay is not None else None,
        mixture_for(config.mixture, data.replay is not None),
        batch,
        config.seed,
    )
    strategy = make_strategy(
        config.method, config.merge_rule, config.merge_weight, config.fisher_samples
    )
    sets = eval_sets(data)
    start = evaluate(clip, sets)
    trajectory, plan, losses = _train_tasks(
        accelerator, clip, strategy, sampler, tasks, steps_ft, config, sets
    )
    result = summarize(start, trajectory)
    result.update(
        {
            "method": config.method,
            "ordering": config.ordering,
            "tasks": config.tasks,
            "mixture": list(asdict(sampler.mixture).values()),
            "schedule": config.schedule,
            "seed": config.seed,
            "steps_per_task": plan.steps,
            "mafs_per_task": plan.mafs_per_task,
            "budget": {**asdict(plan), "reference_steps": steps_ft, "global_batch": batch},
            "options": strategy.options(),
            "train_loss": losses,
            "processes": accelerator.num_processes,
            "start_datasets": start["datasets"],
            "final_datasets": trajectory[-1]["datasets"],
            "stream": tasks,
            **names,
            "seconds": round(time.time() - started, 1),
        }
    )
    return result


def _train_tasks(accelerator, clip, strategy, sampler, tasks, steps_ft, config, sets):
    """Every task through the one task loop; the trajectory, the budget's plan, the losses."""
    train = sampler.train.data

    def rows(concepts: list[str]) -> np.ndarray:
        wanted = [train.names.index(c) for c in concepts]
        return np.flatnonzero(np.isin(train.labels, wanted))

    nothing = rows([])
    probe = sampler.batches(rows(tasks[0]), nothing, 0)(0)
    model, plan, _ = plan_method(clip.model, probe, strategy, steps_ft, config.method)
    model = accelerator.prepare(model)
    fisher = Sampler(sampler.train, None, Mixture(0, 1, 0), sampler.batch, config.seed + 1)

    def stream_tasks():
        for t, concepts in enumerate(tasks):
            current, buffer = rows(concepts), rows([c for task in tasks[:t] for c in task])
            yield Task(sampler.batches(current, buffer, t), fisher.batches(current, nothing, t))

    def lr_at(t: int, s: int, peak: float) -> float:
        return learning_rate(config.schedule, t, s, plan.steps, peak, peak / 20)

    trajectory = []

    def measure(t: int, evaluated: torch.nn.Module) -> None:
        tuned = Clip(evaluated, clip.tokenizer, clip.image_processor)
        trajectory.append({"task": t + 1, **evaluate(tuned, sets)})

    lr = config.lr or DEFAULTS["lr"]
    losses = run_tasks(accelerator, model, strategy, stream_tasks(), plan.steps, lr, lr_at, measure)
    return trajectory, plan, losses
