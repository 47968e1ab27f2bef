"""Knowledge accumulation (KA) and zero-shot retention (ZS), and the stream's summary.

KA is the mean zero-shot accuracy over the adaptation datasets, ZS the same over the eval-only
datasets, each always over a dataset's FULL label set; GM = sqrt(KA * ZS). A run is a trajectory:
the zero-shot start, one point after every task, its final point and its average over tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from emulate.continual.clip import Clip, zero_shot_accuracy
from emulate.continual.universe import ZERO_SHOT_TEMPLATES, ImageSet, Universe, dataset_split


@dataclass
class EvalSets:
    adapt: dict[str, ImageSet]
    evaluation: dict[str, ImageSet]


def eval_sets(universe: Universe) -> EvalSets:
    """The held-out test images of every dataset."""
    return EvalSets(
        {d.name: dataset_split(universe, d.name, "test") for d in universe.adapt},
        {d.name: dataset_split(universe, d.name, "test") for d in universe.evaluation},
    )


def evaluate(clip: Clip, sets: EvalSets, templates=ZERO_SHOT_TEMPLATES) -> dict:
    """{"ka", "zs", "datasets": {name: accuracy}} of ``clip``."""
    accuracy = {
        name: zero_shot_accuracy(clip, s.images, s.labels, s.names, templates)
        for group in (sets.adapt, sets.evaluation)
        for name, s in group.items()
    }
    return {
        "ka": sum(accuracy[n] for n in sets.adapt) / len(sets.adapt),
        "zs": sum(accuracy[n] for n in sets.evaluation) / len(sets.evaluation),
        "datasets": accuracy,
    }


def gm(ka: float, zs: float) -> float:
    return math.sqrt(max(0.0, ka) * max(0.0, zs))


def summarize(start: dict, trajectory: list[dict]) -> dict:
    """start {ka, zs}, trajectory [{task, ka, zs}], final {ka, zs, gm}, average {ka, zs, gm}."""
    last = trajectory[-1]
    ka = sum(p["ka"] for p in trajectory) / len(trajectory)
    zs = sum(p["zs"] for p in trajectory) / len(trajectory)
    return {
        "start": {"ka": start["ka"], "zs": start["zs"]},
        "trajectory": [{"task": p["task"], "ka": p["ka"], "zs": p["zs"]} for p in trajectory],
        "final": {"ka": last["ka"], "zs": last["zs"], "gm": gm(last["ka"], last["zs"])},
        "average": {"ka": ka, "zs": zs, "gm": gm(ka, zs)},
    }
