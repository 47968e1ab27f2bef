"""The composed distribution: a weighted sum of the terms' log-probs, renormalized per token.

    log p(y) = sum_t w_t * log p_t(y) - log Z

Zero probabilities need a rule, since 0 * -inf and -inf + inf are NaN:
- a term with weight 0 in a row is ignored in that row;
- a token that any positive-weight term forbids (-inf) is forbidden: a product of powers is 0;
- a negative-weight term's -inf is clamped to that term's least likely allowed token, so dividing
  by a zero probability makes a token very likely, never infinitely so;
- if the positive terms' supports do not intersect, the union of their supports is used.
So the result never holds NaN, and a token every term forbids is never sampled.
"""

from __future__ import annotations

import torch


def compose_logprobs(term_logits: list[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """Combine per-term logits (each (..., V)) with weights (..., T) into normalized log-probs."""
    all_logprobs = [torch.log_softmax(logits.float(), dim=-1) for logits in term_logits]
    if not bool(torch.isneginf(torch.stack(all_logprobs)).any()):
        # Every term allows every token (the usual case): no rule applies, just the sum.
        total = 0.0
        for t, logprobs in enumerate(all_logprobs):
            total = total + weights[..., t : t + 1].to(logprobs) * logprobs
        return torch.log_softmax(total, dim=-1)
    total = 0.0
    blocked, positive, ignored = [], [], []
    for t, logprobs in enumerate(all_logprobs):
        w = weights[..., t : t + 1].to(logprobs)
        zero_probability = torch.isneginf(logprobs)
        if zero_probability.any():
            floor = logprobs.masked_fill(zero_probability, float("inf")).amin(-1, keepdim=True)
            logprobs = torch.where(zero_probability, floor, logprobs)
        total = total + torch.where(w == 0, torch.zeros_like(logprobs), w * logprobs)
        blocked.append(zero_probability)
        positive.append((w > 0).expand_as(logprobs))
        ignored.append((w == 0).expand_as(logprobs))
    blocked, positive, ignored = torch.stack(blocked), torch.stack(positive), torch.stack(ignored)
    forbidden = (blocked & positive).any(0)
    positive_support = (~blocked & positive).any(0)
    forbidden = torch.where(forbidden.all(-1, keepdim=True), ~positive_support, forbidden)
    forbidden &= ~forbidden.all(-1, keepdim=True)  # no positive term at all: allow everything
    forbidden |= (blocked | ignored).all(0)  # ...but never a token every term forbids
    return torch.log_softmax(total.masked_fill(forbidden, float("-inf")), dim=-1)
