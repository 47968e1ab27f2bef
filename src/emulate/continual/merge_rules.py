"""Merge rules for the merging methods: one merge step of a running merge with a finished task.

Every rule takes the running merge ``merged``, the finished task's weights ``new``, the original
weights ``base`` (task vectors are measured from it) and ``start`` (what the task began from),
and the weight ``w`` in (0, 1] that the new task gets:

- ``interpolate``: (1 - w) * merged + w * new.
- ``task-arithmetic``: merged + w * (new - start): the task's own vector at scaling coefficient w.
- ``ties``: TIES-merging (Yadav et al., 2023) of the task vectors merged - base and new - base:
  each trimmed to its top ``TIES_DENSITY`` magnitudes, signs elected by total mass, the agreeing
  entries averaged, with weights (1 - w, w) scaled to mean one, so w = 0.5 is the paper's plain
  disjoint mean (peft's ``ties``).
- ``dare``: DARE (Yu et al., 2024): each task vector's entries dropped at random with probability
  1 - ``DARE_DENSITY`` and the rest rescaled, then combined with weights (1 - w, w) (peft's
  ``dare_linear``); seeded by torch's generator, which the stream seeds.
- ``magmax``: MagMax (Marczak et al., 2024): per entry, the task vector of larger magnitude; the
  weight plays no part. Max-magnitude is associative, so the running pairwise merge equals the
  paper's merge over all task vectors.
- ``slerp``: spherical interpolation of each weight tensor (flattened) from merged to new at w,
  linear where the two are (anti)parallel or one is zero, as mergekit does.

``interpolation`` is accepted for ``interpolate``.
"""

from __future__ import annotations

import math

import torch

from emulate.common.errors import EmulateError

RULES = ("interpolate", "task-arithmetic", "ties", "dare", "magmax", "slerp")
ALIASES = {"interpolation": "interpolate"}
TIES_DENSITY = 0.2  # the TIES paper's top-20% trim
DARE_DENSITY = 0.5  # entries kept; the DARE paper's 0.1 for small fine-tuning deltas is too
#                     sparse for the full-weight changes of a continual task


class MergeError(EmulateError, ValueError):
    """An unknown merge rule, a weight outside (0, 1], or a rule a method cannot apply."""


def check_rule(rule: str) -> str:
    """The canonical name of ``rule``."""
    name = ALIASES.get(rule, rule)
    if name not in RULES:
        raise MergeError(f"unknown merge rule {rule!r}; choose one of {', '.join(RULES)}")
    return name


def check_weight(weight: float) -> float:
    if not (isinstance(weight, int | float) and math.isfinite(weight) and 0 < weight <= 1):
        raise MergeError(
            f"--merge-weight {weight} is not in (0, 1]; it is the share (or scale) the new task "
            "gets in a merge, e.g. --merge-weight 0.5"
        )
    return float(weight)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, eps: float = 1e-8) -> torch.Tensor:
    """Spherical interpolation of ``a`` to ``b`` at ``t``, treating each as one flat vector."""
    x, y = a.flatten().double(), b.flatten().double()
    nx, ny = x.norm(), y.norm()
    if nx < eps or ny < eps:
        return torch.lerp(a, b, t)
    cos = torch.clamp((x @ y) / (nx * ny), -1.0, 1.0)
    if abs(float(cos)) > 0.9995:
        return torch.lerp(a, b, t)
    omega = torch.arccos(cos)
    out = (torch.sin((1 - t) * omega) * x + torch.sin(t * omega) * y) / torch.sin(omega)
    return out.view_as(a).to(a.dtype)


def merge_tensor(
    merged: torch.Tensor,
    new: torch.Tensor,
    base: torch.Tensor,
    start: torch.Tensor,
    rule: str,
    w: float,
) -> torch.Tensor:
    """One merge step of one floating-point tensor."""
    from peft.utils.merge_utils import dare_linear, ties

    if rule == "interpolate":
        return (1 - w) * merged + w * new
    if rule == "task-arithmetic":
        return merged + w * (new - start)
    if rule == "slerp":
        return slerp(merged, new, w)
    vectors = [merged - base, new - base]
    if rule == "magmax":
        return base + torch.where(vectors[1].abs() > vectors[0].abs(), vectors[1], vectors[0])
    weights = torch.tensor([1 - w, w], dtype=merged.dtype)
    if rule == "ties":
        return base + ties(vectors, 2 * weights, TIES_DENSITY)
    if rule == "dare":
        return base + dare_linear(vectors, weights, DARE_DENSITY)
    raise MergeError(f"unknown merge rule {rule!r}; choose one of {', '.join(RULES)}")


def merge(merged: dict, new: dict, base: dict, start: dict, rule: str, weight: float) -> dict:
    """One merge step over state dicts (non-floating entries are taken from ``new``)."""
    rule, weight = check_rule(rule), check_weight(weight)
    return {
        k: merge_tensor(m, new[k], base[k], start[k], rule, weight)
        if torch.is_floating_point(m)
        else new[k].clone()
        for k, m in merged.items()
    }
