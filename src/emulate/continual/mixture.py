"""What each batch is made of: pretraining data, the current task and a buffer of ALL earlier
tasks, one third each by default. Captions are drawn per image from the caption templates."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emulate.common.errors import EmulateError
from emulate.continual.universe import ImageSet, Universe, caption


class MixtureError(EmulateError, ValueError):
    """A mixture that is not three non-negative shares summing to 1."""


@dataclass(frozen=True)
class Mixture:
    pretrain: float = 1 / 3
    current: float = 1 / 3
    buffer: float = 1 / 3

    @classmethod
    def parse(cls, text: str) -> Mixture:
        """``"P,D,B"`` -> Mixture, e.g. ``"0,1,0"`` for the current task only."""
        try:
            parts = [float(x) for x in text.split(",")]
        except ValueError:
            parts = []
        if len(parts) != 3 or any(not math.isfinite(x) or x < 0 for x in parts):
            raise MixtureError(
                f"mixture {text!r} is not three finite non-negative numbers P,D,B "
                "(pretraining, current task, buffer), e.g. --mix 0.34,0.33,0.33"
            )
        if abs(sum(parts) - 1) > 1e-3:
            raise MixtureError(
                f"mixture {text!r} sums to {sum(parts):g}, not 1; give shares of one batch, "
                "e.g. --mix 0.34,0.33,0.33 or --mix 0,1,0"
            )
        return cls(*parts)

    def counts(self, batch: int, has_buffer: bool) -> tuple[int, int, int]:
        """Images per source in a batch of ``batch``; with no buffer yet (first task) its
        share goes to the current task, and a share with no data never empties a batch."""
        pretrain = round(self.pretrain * batch)
        buffer = round(self.buffer * batch) if has_buffer else 0
        current = batch - pretrain - buffer
        return pretrain, current, buffer


@dataclass
class TaskData:
    """The stream's training images of some concepts, labelled by concept name."""

    images: np.ndarray
    names: list[str]  # concept name of every image

    def __len__(self) -> int:
        return len(self.names)


def task_data(sets: dict[str, ImageSet], concepts: list[str]) -> TaskData:
    """The training images of ``concepts``, gathered from the datasets holding them."""
    images, names = [], []
    wanted = set(concepts)
    for s in sets.values():
        rows = np.array([s.names[i] in wanted for i in s.labels], dtype=bool)
        if rows.any():
            images.append(s.images[rows])
            names += [s.names[i] for i in s.labels[rows]]
    if not images:
        return TaskData(np.zeros((0, 1, 1, 3), np.uint8), [])
    return TaskData(np.concatenate(images), names)


class BatchSampler:
    """Seeded batches for one task: (uint8 images, captions)."""

    def __init__(
        self,
        universe: Universe,
        pool: ImageSet,
        mixture: Mixture,
        batch: int,
        seed: int,
        attributes: float,
    ):
        self.universe, self.pool, self.mixture = universe, pool, mixture
        self.batch, self.seed, self.attributes = batch, seed, attributes
        self.rank = 0

    def sources(self, current: TaskData, buffer: TaskData, task: int, step: int):
        rank = self.rank  # processes under `accelerate launch` draw different batches
        rng = np.random.default_rng([self.seed, task, step] + ([rank] if rank else []))
        n_pool, n_cur, n_buf = self.mixture.counts(self.batch, len(buffer) > 0)
        picks = []
        if n_pool:
            rows = rng.integers(0, len(self.pool), n_pool)
            names = [self.pool.names[i] for i in self.pool.labels[rows]]
            picks.append((self.pool.images[rows], names, self.universe.size.attribute_captions))
        for data, n in ((current, n_cur), (buffer, n_buf)):
            if n and len(data):
                rows = rng.integers(0, len(data), n)
                picks.append((data.images[rows], [data.names[i] for i in rows], self.attributes))
        images = np.concatenate([p[0] for p in picks])
        captions = [caption(self.universe, n, rng, a) for _, names, a in picks for n in names]
        return images, captions
