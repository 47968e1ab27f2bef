"""Scoring text under a composition: the composed log-prob of each continuation token.

What an evaluation harness asks of a model: log p(continuation | context) summed over the
continuation's tokens, and whether greedy decoding would have produced it. For a composition,
each token's probability is the composed, renormalized distribution at that position, exactly
as decoding samples from it; every term reads the context through its own template and then
the same continuation ids. Rows are left-padded into one forward per model per batch, with
explicit positions, so a row's scores do not depend on what it is batched with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emulate.common.errors import PromptTooLongError
from emulate.compose.combine import compose_logprobs
from emulate.compose.placement import input_device


@dataclass
class Scored:
    """Per-token composed log-probs of one continuation, and whether each was the argmax."""

    logprobs: list[float]
    greedy: bool

    @property
    def total(self) -> float:
        return float(sum(self.logprobs))


@torch.inference_mode()
def score_continuations(composition, contexts: list[dict[str, list[int]]],
                        continuations: list[list[int]], batch_size: int = 16) -> list[Scored]:
    """`contexts[i][term]`: the ids term reads before continuation i (its template applied).

    Continuations must be non-empty; contexts are cut from the left to fit each model's
    context window (as lm-eval does), keeping every continuation token.
    """
    weights_by_term = composition.resolve_weights()
    terms = [t for t in composition.term_names if weights_by_term[t] != 0]
    weights = torch.tensor([weights_by_term[t] for t in terms], dtype=torch.float32)
    order = sorted(range(len(continuations)),
                   key=lambda i: -max(len(contexts[i][t]) for t in terms) - len(continuations[i]))
    out: list[Scored | None] = [None] * len(continuations)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        per_term = _term_logprobs(composition, terms, [contexts[i] for i in rows],
                                  [continuations[i] for i in rows])
        for j, i in enumerate(rows):
            target = torch.tensor(continuations[i])
            n = len(target)
            logits = [lp[j, -n:] for lp in per_term]
            composed = compose_logprobs(logits, weights.to(logits[0].device)).cpu()
            picked = composed.gather(-1, target[:, None])[:, 0]
            greedy = bool((composed.argmax(-1) == target).all())
            out[i] = Scored(picked.tolist(), greedy)
    return out


def _term_logprobs(composition, terms, contexts, continuations) -> list[torch.Tensor]:
    """For each term, (rows, longest continuation, V) logits predicting each continuation token
    (right-aligned: row j's continuation occupies the last len(continuation j) positions)."""
    keep = max(len(c) for c in continuations)
    groups: dict[str, list[str]] = {}
    for t in terms:
        groups.setdefault(composition.model_key(t), []).append(t)
    result: dict[str, torch.Tensor] = {}
    for key, group in groups.items():
        model = composition.loaded[key].model
        limit = composition.context_length(group[0])
        sequences = []
        for t in group:
            for context, continuation in zip(contexts, continuations, strict=True):
                sequences.append(_fit(context[t], continuation, limit, t))
        logits = _forward(model, sequences, keep, composition.vocab_size)
        logits = logits.to(composition.device)
        for t, block in zip(group, logits.chunk(len(group)), strict=True):
            result[t] = block
    return [result[t] for t in terms]


def _fit(context: list[int], continuation: list[int], limit: int | None, term: str) -> list[int]:
    """context + continuation without its last token (the inputs that predict it), cut from
    the left to the model's window."""
    inputs = list(context) + list(continuation[:-1])
    if limit is not None and len(inputs) > limit:
        if len(continuation) > limit:
            raise PromptTooLongError(
                f"a continuation of {len(continuation)} tokens does not fit term {term!r}'s "
                f"context of {limit}; score shorter continuations")
        inputs = inputs[-limit:]
    return inputs


def _forward(model, sequences: list[list[int]], keep: int, vocab: int) -> torch.Tensor:
    """The model's own forward over left-padded rows; logits at the last `keep` positions."""
    longest = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), longest, dtype=torch.long)
    mask = torch.zeros(len(sequences), longest, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, longest - len(sequence):] = torch.tensor(sequence, dtype=torch.long)
        mask[row, longest - len(sequence):] = 1
    device = input_device(model)
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                logits_to_keep=keep)
    logits = out.logits[:, -keep:, :vocab]
    if logits.shape[1] < keep:  # a row shorter than the longest continuation: pad on the left
        pad = logits.new_zeros(logits.shape[0], keep - logits.shape[1], logits.shape[2])
        logits = torch.cat([pad, logits], dim=1)
    return logits
