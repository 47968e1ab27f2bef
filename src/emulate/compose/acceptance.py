"""The rule that keeps speculative output exactly the composition's (Leviathan et al. 2023).

A draft token x, drawn from the draft's distribution q, stands with probability min(1, p(x)/q(x))
under the composed distribution p; otherwise the replacement is drawn from norm(max(0, p - q)).
Greedy rows keep x while it is p's argmax. Each position's random numbers come from a generator
seeded by the row's seed and the position, so a row's output depends on neither k nor its batch.
"""

from __future__ import annotations

import torch

from emulate.compose.combine import compose_logprobs
from emulate.compose.sampling import SamplingParams, draw, filter_logprobs


def propose(term_logits: list[torch.Tensor], weights: list[float], params: list[SamplingParams],
            seeds: list[int], positions: list[int]):
    """Draft one position per row from the draft's terms' logits (each (rows, V)), combined
    with `weights`: (tokens, q per row, generator per row).

    Greedy rows take the draft's argmax (q None). Sampled rows draw from the draft's filtered
    distribution q with a generator seeded by (row seed, absolute position), so a row's output
    does not depend on k or on the other rows of the batch.
    """
    q, generators = [None] * len(params), [None] * len(params)
    sampled = [r for r, p in enumerate(params) if not p.greedy]
    if not sampled and len(term_logits) == 1 and weights[0] > 0:
        return term_logits[0].argmax(dim=-1).cpu(), q, generators  # one term: its argmax
    weights = torch.tensor([weights], device=term_logits[0].device)
    logq = compose_logprobs(term_logits, weights.expand(len(params), -1))
    tokens = logq.argmax(dim=-1).cpu()
    if sampled:
        filtered = filter_logprobs(logq[sampled], [params[r] for r in sampled])
        for r, probs in zip(sampled, filtered.exp().cpu().double(), strict=True):
            generators[r] = torch.Generator().manual_seed(position_seed(seeds[r], positions[r]))
            q[r] = probs
            tokens[r] = draw(probs, generators[r])
    return tokens, q, generators


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
