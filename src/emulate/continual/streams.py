"""Streams: the adaptation concepts in some order, cut into T tasks.

Orderings: ``random`` (seeded), ``frequency`` (rare -> frequent in pretraining), ``performance``
(worst -> best initial zero-shot accuracy), ``similarity`` (a nearest-neighbour chain through the
initial model's image embeddings), ``dataset`` (dataset-incremental); ``-reverse`` reverses any.
"""

from __future__ import annotations

import numpy as np
import torch

from emulate.common.errors import EmulateError
from emulate.continual.clip import Clip, image_embeddings, text_classifier
from emulate.continual.universe import ZERO_SHOT_TEMPLATES, ImageSet, Universe

ORDERINGS = ("random", "frequency", "performance", "similarity", "dataset")


class StreamError(EmulateError, ValueError):
    """An unknown ordering, or a stream that cannot be cut into the tasks asked for."""


def check_ordering(ordering: str) -> tuple[str, bool]:
    base, reverse = ordering, False
    if ordering.endswith("-reverse"):
        base, reverse = ordering[: -len("-reverse")], True
    if base not in ORDERINGS:
        names = ", ".join(ORDERINGS)
        raise StreamError(
            f"unknown ordering {ordering!r}; choose one of {names} (add -reverse to reverse)"
        )
    return base, reverse


def _per_concept(universe: Universe, train: dict[str, ImageSet], clip: Clip):
    """Initial zero-shot accuracy (over its dataset's full label set) and mean image embedding
    of every stream concept, on its training images."""
    accuracy, embedding = {}, {}
    for d in universe.adapt:
        s = train[d.name]
        emb = image_embeddings(clip, s.images)
        classes = text_classifier(clip, s.names, ZERO_SHOT_TEMPLATES).cpu()
        pred = (emb @ classes.T).argmax(-1).numpy()
        for i, name in enumerate(s.names):
            rows = s.labels == i
            accuracy[name] = float((pred[rows] == i).mean())
            embedding[name] = torch.nn.functional.normalize(
                emb[torch.from_numpy(rows)].mean(0), dim=0
            )
    return accuracy, embedding


def order_concepts(
    universe: Universe, ordering: str, seed: int, clip: Clip, train: dict[str, ImageSet]
) -> list[str]:
    base, reverse = check_ordering(ordering)
    concepts = universe.stream_concepts()
    rng = np.random.default_rng([seed, 77])
    tiebreak = {c: float(x) for c, x in zip(concepts, rng.random(len(concepts)), strict=True)}
    if base == "random":
        order = [concepts[i] for i in rng.permutation(len(concepts))]
    elif base == "frequency":
        order = sorted(concepts, key=lambda c: (universe.concepts[c].frequency, tiebreak[c]))
    elif base == "dataset":
        datasets = [universe.adapt[i] for i in rng.permutation(len(universe.adapt))]
        order = [c for d in datasets for c in d.concepts]
    else:
        accuracy, embedding = _per_concept(universe, train, clip)
        if base == "performance":
            order = sorted(concepts, key=lambda c: (accuracy[c], tiebreak[c]))
        else:
            order = [concepts[int(rng.integers(len(concepts)))]]
            left = [c for c in concepts if c != order[0]]
            while left:
                sims = [float(embedding[order[-1]] @ embedding[c]) for c in left]
                order.append(left.pop(int(np.argmax(sims))))
    return order[::-1] if reverse else order


def cut(order: list[str], tasks: int) -> list[list[str]]:
    """``tasks`` consecutive chunks of near-equal size."""
    if tasks < 1:
        raise StreamError(f"--tasks must be at least 1, got {tasks}")
    if tasks > len(order):
        raise StreamError(
            f"{tasks} tasks asked for but the stream has only {len(order)} concepts; "
            f"use --tasks {len(order)} or fewer"
        )
    bounds = np.linspace(0, len(order), tasks + 1).round().astype(int)
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
