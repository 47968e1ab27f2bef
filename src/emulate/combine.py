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
    total = None
    forbidden = None
    positive_support = None
    forbidden_by_all = None
    for t, logits in enumerate(term_logits):
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        w = weights[..., t : t + 1].to(logprobs)
        blocked = torch.isneginf(logprobs)
        if blocked.any():
            floor = logprobs.masked_fill(blocked, float("inf")).amin(dim=-1, keepdim=True)
            logprobs = torch.where(blocked, floor, logprobs)
        contribution = torch.where(w == 0, torch.zeros_like(logprobs), w * logprobs)
        total = contribution if total is None else total + contribution
        is_positive = w > 0
        term_forbids = blocked & is_positive
        term_allows = ~blocked & is_positive
        forbidden = term_forbids if forbidden is None else forbidden | term_forbids
        blocked_here = blocked | (w == 0)
        forbidden_by_all = blocked_here if forbidden_by_all is None else forbidden_by_all & blocked_here
        positive_support = term_allows if positive_support is None else positive_support | term_allows
    empty = forbidden.all(dim=-1, keepdim=True)
    forbidden = torch.where(empty, ~positive_support, forbidden)
    all_blocked = forbidden.all(dim=-1, keepdim=True)  # no positive term at all: allow everything
    forbidden = (forbidden & ~all_blocked) | forbidden_by_all
    total = total.masked_fill(forbidden, float("-inf"))
    return torch.log_softmax(total, dim=-1)
