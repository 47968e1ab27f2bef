"""The rule that keeps speculative output exactly the composition's (Leviathan et al. 2023).

A draft token x, drawn from the draft's distribution q, stands with probability min(1, p(x)/q(x))
under the composed distribution p; otherwise the replacement is drawn from norm(max(0, p - q)).
Greedy rows keep x while it is p's argmax. Each position's random numbers come from a generator
seeded by the row's seed and the position, so a row's output depends on neither k nor its batch.
"""

from __future__ import annotations

import torch

from emulate.compose.sampling import SamplingParams, draw


def verdict(params: SamplingParams, x: int, best, p, q, generator) -> int | None:
    """None if draft token x stands; otherwise the token to emit in its place.

    Greedy: x stands if it is p's argmax. Sampled: x stands with probability min(1, p(x)/q(x));
    otherwise the replacement is drawn from norm(max(0, p - q)).
    """
    if params.greedy:
        return None if x == int(best) else int(best)
    if torch.rand(1, generator=generator, dtype=torch.float64).item() * q[x] < p[x]:
        return None
    residual = (p - q).clamp(min=0)
    residual = residual if residual.sum() > 0 else p  # p == q up to rounding
    return draw(residual, generator)


def position_seed(seed: int, position: int) -> int:
    """A 64-bit seed for (row seed, position): splitmix64 of their combination."""
    x = (seed * 0x9E3779B97F4A7C15 + position + 1) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)
