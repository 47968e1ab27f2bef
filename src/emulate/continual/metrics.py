"""Knowledge accumulation (KA) and zero-shot retention (ZS), and the stream's summary.

KA is the mean zero-shot accuracy over the adaptation datasets, ZS the same over the eval-only
datasets, each always over a dataset's FULL label set; GM = sqrt(KA * ZS). A run is a trajectory:
the zero-shot start, one point after every task, its final point and its average over tasks.

The per-task matrix R[i][j] is the accuracy on the test images of task j's concepts (each still
classified among its dataset's full label set) after training task i; from it, with R_0 the
start: average forgetting (mean over j < T of max_{j <= i < T} R[i][j] - R[T][j]), backward
transfer (mean over j < T of R[T][j] - R[j][j]) and forward transfer (mean over j > 1 of
R[j-1][j] - R_0[j], what earlier tasks did for a task before it was trained).

Retrieval runs on a held-out split: ``RETRIEVAL_PER_CONCEPT`` images of every eval-only concept
from its dataset's train split (never trained on: the stream trains on adaptation datasets only)
with one seeded caption each. A hit at k is a caption of the same concept among the top k (the
captions are templates of the concept name, so a pair's own caption is one of many equal ones).
As in the paper, the retrieval set enters ZS as one more eval-only dataset whose score is its
recall@5 (the mean of image-to-text and text-to-image): ZS is the mean over the eval-only
datasets and that score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from emulate.continual.clip import Clip, image_embeddings, text_classifier
from emulate.continual.universe import (
    ZERO_SHOT_TEMPLATES,
    ImageSet,
    Universe,
    caption,
    dataset_split,
)

RETRIEVAL_PER_CONCEPT = 4


@dataclass
class RetrievalSet:
    images: np.ndarray
    captions: list[str]
    concepts: list[str]  # of each image and its caption


@dataclass
class EvalSets:
    adapt: dict[str, ImageSet]
    evaluation: dict[str, ImageSet]
    retrieval: RetrievalSet | None = None


def retrieval_set(universe: Universe) -> RetrievalSet:
    """The held-out retrieval split of the eval-only concepts."""
    rng = np.random.default_rng([universe.seed, 30_000])
    images, concepts = [], []
    for d in universe.evaluation:
        s = dataset_split(universe, d.name, "train")
        for label in range(len(s.names)):
            rows = np.flatnonzero(s.labels == label)[:RETRIEVAL_PER_CONCEPT]
            images.append(s.images[rows])
            concepts += [s.names[label]] * len(rows)
    captions = [caption(universe, c, rng, 0.0) for c in concepts]
    return RetrievalSet(np.concatenate(images), captions, concepts)


def eval_sets(universe: Universe) -> EvalSets:
    """The held-out test images of every dataset, and the retrieval split."""
    return EvalSets(
        {d.name: dataset_split(universe, d.name, "test") for d in universe.adapt},
        {d.name: dataset_split(universe, d.name, "test") for d in universe.evaluation},
        retrieval_set(universe),
    )


@torch.no_grad()
def retrieval(clip: Clip, r: RetrievalSet) -> dict:
    """Image-to-text and text-to-image recall@1 and @5 (a hit: the same concept)."""
    was_training = clip.model.training
    clip.model.eval()
    image = image_embeddings(clip, r.images)
    device = next(clip.model.parameters()).device
    text = clip.model.get_text_features(
        **{k: v.to(device) for k, v in clip.tokens(r.captions).items()}
    )
    text = torch.nn.functional.normalize(getattr(text, "pooler_output", text), dim=-1).cpu()
    clip.model.train(was_training)
    ids = {c: i for i, c in enumerate(dict.fromkeys(r.concepts))}
    concept = torch.tensor([ids[c] for c in r.concepts])
    same = concept[:, None] == concept[None, :]
    sims = image @ text.T
    out = {}
    for k in (1, 5):
        top_text = sims.topk(k, dim=1).indices  # per image
        top_image = sims.T.topk(k, dim=1).indices  # per caption
        out[f"i2t_r{k}"] = float(same.gather(1, top_text).any(1).float().mean())
        out[f"t2i_r{k}"] = float(same.gather(1, top_image).any(1).float().mean())
    return out


def _correct(clip: Clip, s: ImageSet, templates) -> np.ndarray:
    """Whether each image is classified right among ALL of its dataset's names."""
    was_training = clip.model.training
    clip.model.eval()
    classes = text_classifier(clip, s.names, templates).cpu()
    predicted = (image_embeddings(clip, s.images) @ classes.T).argmax(-1).numpy()
    clip.model.train(was_training)
    return predicted == s.labels


def evaluate(
    clip: Clip, sets: EvalSets, templates=ZERO_SHOT_TEMPLATES, tasks: list[list[str]] = ()
) -> dict:
    """{"ka", "zs", "datasets": {name: accuracy}, "tasks": [accuracy on each task's
    concepts]} of ``clip``."""
    correct = {
        name: _correct(clip, s, templates)
        for group in (sets.adapt, sets.evaluation)
        for name, s in group.items()
    }
    accuracy = {name: float(c.mean()) for name, c in correct.items()}
    by_concept: dict[str, list[bool]] = {}
    for name, s in sets.adapt.items():
        for label, right in zip(s.labels, correct[name], strict=True):
            by_concept.setdefault(s.names[label], []).append(bool(right))
    per_task = [
        float(np.mean([r for c in task for r in by_concept.get(c, [])] or [0.0])) for task in tasks
    ]
    zs_scores = [accuracy[n] for n in sets.evaluation]
    out = {"datasets": accuracy, "tasks": per_task}
    if sets.retrieval is not None:
        out["retrieval"] = retrieval(clip, sets.retrieval)
        zs_scores.append((out["retrieval"]["i2t_r5"] + out["retrieval"]["t2i_r5"]) / 2)
    return {
        "ka": sum(accuracy[n] for n in sets.adapt) / len(sets.adapt),
        "zs": sum(zs_scores) / len(zs_scores),
        **out,
    }


def chance(sets: EvalSets) -> float:
    """The mean over datasets of 1 / labels."""
    groups = [*sets.adapt.values(), *sets.evaluation.values()]
    return sum(1 / len(s.names) for s in groups) / len(groups)


def transfer(start: list[float], matrix: list[list[float]]) -> dict:
    """Average forgetting, backward and forward transfer of the per-task matrix."""
    t = len(matrix)
    if t < 2:
        return {"forgetting": 0.0, "bwt": 0.0, "fwt": 0.0}
    last = matrix[-1]
    forgetting = [max(matrix[i][j] for i in range(j, t - 1)) - last[j] for j in range(t - 1)]
    bwt = [last[j] - matrix[j][j] for j in range(t - 1)]
    fwt = [matrix[j - 1][j] - start[j] for j in range(1, t)]
    return {
        "forgetting": sum(forgetting) / (t - 1),
        "bwt": sum(bwt) / (t - 1),
        "fwt": sum(fwt) / (t - 1),
    }


def gm(ka: float, zs: float) -> float:
    return math.sqrt(max(0.0, ka) * max(0.0, zs))


def summarize(start: dict, trajectory: list[dict]) -> dict:
    """start {ka, zs, chance}, trajectory [{task, ka, zs}], final {ka, zs, gm}, average
    {ka, zs, gm}; with per-task accuracies, matrix, forgetting, bwt and fwt."""
    last = trajectory[-1]
    ka = sum(p["ka"] for p in trajectory) / len(trajectory)
    zs = sum(p["zs"] for p in trajectory) / len(trajectory)
    out = {
        "start": {"ka": start["ka"], "zs": start["zs"]},
        "trajectory": [{"task": p["task"], "ka": p["ka"], "zs": p["zs"]} for p in trajectory],
        "final": {"ka": last["ka"], "zs": last["zs"], "gm": gm(last["ka"], last["zs"])},
        "average": {"ka": ka, "zs": zs, "gm": gm(ka, zs)},
    }
    if "chance" in start:
        out["start"]["chance"] = start["chance"]
    if "retrieval" in last:
        out["retrieval"] = last["retrieval"]
        out["start"]["retrieval"] = start.get("retrieval")
    if start.get("tasks") and all(p.get("tasks") for p in trajectory):
        matrix = [p["tasks"] for p in trajectory]
        out.update({"matrix": matrix, "start_tasks": start["tasks"]})
        out.update(transfer(start["tasks"], matrix))
    return out
