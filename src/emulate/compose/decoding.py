"""The decode loop: prefill every term once, then one cached forward per model per token.

A `Decoder` is one batch of prompts in flight. Each step composes the terms' next-token logits,
chooses a token per row, appends it to every term's sequence, and retires finished rows so they
stop costing forwards. Callers pull steps (generate, stream, the server's batcher) and may cancel
rows at any time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from emulate.common.errors import PromptTooLongError
from emulate.compose.cached_batch import CachedBatch
from emulate.compose.checks import EmptyPromptError
from emulate.compose.combine import compose_logprobs
from emulate.compose.lean_llama import LeanLlama
from emulate.compose.sampling import SamplingParams, choose_tokens, min_p_mask, top_p_mask
from emulate.compose.templates import Prompt
from emulate.compose.text import TextAssembler


@dataclass
class Delta:
    """New text for one prompt; `finish_reason` is set on its last delta."""

    index: int
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length" or "cancelled"


def merged(deltas: list[Delta]) -> Delta:
    """One delta per row per step: the texts and tokens of the accepted block, in order."""
    last = deltas[-1]
    return Delta(last.index, "".join(d.text for d in deltas),
                 [t for d in deltas for t in d.token_ids], last.finish_reason)


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int


class Decoder:
    """One batch of prompts decoded in lockstep through every term of a composition."""

    def __init__(self, composition, prompts: list[Prompt], params: list[SamplingParams],
                 extra_terms=()):
        self.composition = composition
        self.params = params
        self.generators = [p.generator() for p in params]
        row_weights = [composition.resolve_weights(p) for p in params]
        watched = {p.plausibility.term for p in params if p.plausibility is not None}
        self.terms = [
            t for t in composition.term_names
            if t in watched or t in extra_terms or any(w[t] != 0 for w in row_weights)
        ]
        self.weights = torch.tensor([[w[t] for t in self.terms] for w in row_weights])
        self.assemblers = [TextAssembler(composition.tokenizer, p.stop) for p in params]
        self.finish_reasons: list[str | None] = [None] * len(prompts)
        self.rows = list(range(len(prompts)))  # prompt indices still running, in batch order
        self._cancelled: set[int] = set()
        prompt_ids = {t: [composition.prompt_ids(t, p) for p in prompts] for t in self.terms}
        self.prompt_ids = prompt_ids  # term -> each prompt's token ids in that term's template
        self.prompt_tokens = [max(len(prompt_ids[t][i]) for t in self.terms) for i in self.rows]
        self.budget = [self._budget(i, prompt_ids, p) for i, p in enumerate(params)]
        self.groups: dict[str, list[str]] = {}
        for t in self.terms:
            self.groups.setdefault(composition.model_key(t), []).append(t)
        self.batches = {
            key: CachedBatch(self.model_for(key), composition.vocab_size,
                             getattr(composition, "device", None))
            for key in self.groups
        }
        self.logits: dict[str, torch.Tensor] = {}
        # Prompts of models whose prefill waits for their first forward (see `_defers`).
        self.deferred: dict[str, list[list[int]]] = {}
        for key, terms in self.groups.items():
            self._prefill(key, [ids for t in terms for ids in prompt_ids[t]])

    def _prefill(self, key: str, sequences: list[list[int]]) -> None:
        """Read the prompts into model `key` (one row per term and prompt), or defer them."""
        if self._defers(key):
            self.deferred[key] = sequences
        else:
            self._store(key, self.batches[key].prefill(sequences))

    def _defers(self, key: str) -> bool:
        """Whether model `key` reads the prompts only with its first decoding forward. Lockstep
        needs every term's logits before the first token, so nothing waits."""
        return False

    def model_for(self, key: str):
        """What runs model `key`'s forwards. For small models most of a library forward is
        per-call machinery, so Llama models run the lean forward, checked against the library's
        on a probe, unless the composition was built with `lean=False`."""
        model = self.composition.loaded[key].model
        return LeanLlama.wrap(model) if self.composition.lean else model

    @property
    def done(self) -> bool:
        return not self.rows

    def cancel(self, index: int) -> None:
        """Stop decoding prompt `index`; its rows leave the batch before the next forward."""
        if index in self.rows:
            self._cancelled.add(index)

    @property
    def takes_rows(self) -> bool:
        """Whether rows can merge in now (a decoder of another kind may first need a step)."""
        return bool(self.rows) and not self.deferred

    def can_merge(self, other: Decoder) -> bool:
        """Whether `merge(other)` may run: decoders of one kind, composition and terms, with
        nothing deferred (a deferred prompt has no cache to merge yet)."""
        return (type(other) is type(self) and bool(self.rows) and bool(other.rows)
                and not self.deferred and not other.deferred
                and other.composition is self.composition and other.terms == self.terms)

    def merge(self, other: Decoder) -> int:
        """Take over `other`'s running rows, so one forward per step serves both (continuous
        batching). Call between steps. Returns the offset: other's prompt i is now prompt
        offset + i here. Both must be Decoders of one kind over the same composition and
        terms (`can_merge`)."""
        if not self.can_merge(other):
            raise ValueError("merge needs decoders of one kind and composition with the same "
                             "terms, neither holding deferred prompts")
        offset, mine, theirs = len(self.params), len(self.rows), len(other.rows)
        for key, terms in self.groups.items():  # a model's rows are blocks, one per term
            n, order = len(terms), []
            for j in range(n):
                order += [j * mine + p for p in range(mine)]
                order += [n * mine + j * theirs + q for q in range(theirs)]
            self.batches[key].merge(other.batches[key], torch.tensor(order))
        for t in self.terms:
            self.logits[t] = torch.cat([self.logits[t], other.logits[t]])
        for name in ("params", "generators", "assemblers", "finish_reasons", "prompt_tokens",
                     "budget"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.weights = torch.cat([self.weights, other.weights])
        for t in self.terms:
            self.prompt_ids[t] = self.prompt_ids[t] + other.prompt_ids[t]
        self.rows += [offset + i for i in other.rows]
        self._cancelled |= {offset + i for i in other._cancelled}
        return offset

    def composed_logprobs(self) -> torch.Tensor:
        """The composed next-token log-distribution of the running rows, (rows, vocab)."""
        logits = [self.logits[t] for t in self.terms]
        return compose_logprobs(logits, self.weights[self.rows].to(logits[0].device))

    def step(self) -> list[Delta]:
        """Choose one token for every running row; return the deltas it produced."""
        deltas = [self._finish(i, "cancelled") for i in self.rows if i in self._cancelled]
        self._retire()
        if not self.rows:
            return deltas
        logprobs = self._plausible(self.composed_logprobs())
        params = [self.params[i] for i in self.rows]
        tokens = choose_tokens(logprobs, params, [self.generators[i] for i in self.rows]).cpu()
        for i, token in zip(self.rows, tokens.tolist(), strict=True):
            deltas.append(self.accept(i, token))
        self._retire()
        if self.rows:
            fed = torch.tensor([self.assemblers[i].token_ids[-1] for i in self.rows])
            self._feed(fed[:, None])
        return deltas

    def accept(self, index: int, token: int) -> Delta:
        """Append `token` to prompt `index`'s completion and decide whether it is finished."""
        assembler = self.assemblers[index]
        if token in self.composition.eos_token_ids and not self.params[index].ignore_eos:
            assembler.token_ids.append(token)
            return self._finish(index, "stop", [token])
        text = assembler.add(token)
        if assembler.stopped:
            return self._finish(index, "stop", [token], text)
        if len(assembler.token_ids) >= self.budget[index]:
            return self._finish(index, "length", [token], text)
        return Delta(index, text, [token])

    def completion(self, index: int) -> Completion:
        assembler = self.assemblers[index]
        return Completion(
            text=assembler.text,
            token_ids=list(assembler.token_ids),
            finish_reason=self.finish_reasons[index] or "length",
            prompt_tokens=self.prompt_tokens[index],
        )

    def _finish(self, index: int, reason: str, tokens=(), text: str = "") -> Delta:
        self.finish_reasons[index] = reason
        return Delta(index, text + self.assemblers[index].finish(), list(tokens), reason)

    def _retire(self) -> None:
        """Drop finished rows from every model's batch."""
        keep = [pos for pos, i in enumerate(self.rows) if self.finish_reasons[i] is None]
        if len(keep) == len(self.rows):
            return
        running = len(self.rows)
        self.rows = [self.rows[pos] for pos in keep]
        self._cancelled &= set(self.rows)
        if not self.rows:
            return
        for key, terms in self.groups.items():
            block_rows = [j * running + pos for j in range(len(terms)) for pos in keep]
            if key in self.deferred:
                self.deferred[key] = [self.deferred[key][r] for r in block_rows]
                continue
            self.batches[key].keep(torch.tensor(block_rows))
            for t in terms:
                self.logits[t] = self.logits[t][torch.tensor(keep, device=self.logits[t].device)]

    def _feed(self, tokens: torch.Tensor) -> None:
        """Append tokens (rows, t) to every term and keep the logits at the last position."""
        for key, terms in self.groups.items():
            logits = self.batches[key].extend(tokens.repeat(len(terms), 1))
            self._store(key, logits[:, -1])

    def _store(self, key: str, logits: torch.Tensor) -> None:
        for t, block in zip(self.groups[key], logits.chunk(len(self.groups[key])), strict=True):
            self.logits[t] = block

    def _plausible(self, logprobs: torch.Tensor, logits: dict | None = None) -> torch.Tensor:
        """Conservative decoding: restrict rows to their chosen term's top-p / min-p set.

        `logprobs` is (rows, V) or (rows, positions, V); `logits` maps terms to logits of the
        same shape (default: the next-token logits of the running rows).
        """
        filters = [self.params[i].plausibility for i in self.rows]
        if all(f is None for f in filters):
            return logprobs
        logits = self.logits if logits is None else logits
        blocked = torch.zeros_like(logprobs, dtype=torch.bool)
        for pos, f in enumerate(filters):
            if f is None:
                continue
            own = torch.log_softmax(logits[f.term][pos].float(), dim=-1)
            flat = own.reshape(-1, own.shape[-1])
            full = torch.ones(flat.shape[0], dtype=flat.dtype, device=flat.device)
            outside = top_p_mask(flat, full * f.top_p) | min_p_mask(flat, full * f.min_p)
            blocked[pos] = outside.reshape(own.shape)
        kept = logprobs.masked_fill(blocked, float("-inf"))
        empty = torch.isneginf(kept).all(dim=-1, keepdim=True)
        return torch.log_softmax(torch.where(empty, logprobs, kept), dim=-1)

    def _budget(self, index: int, prompt_ids, params: SamplingParams) -> int:
        """Tokens this prompt may generate: max_new_tokens, capped by every model's context."""
        budget = params.max_new_tokens
        for t in self.terms:
            length = len(prompt_ids[t][index])
            if not length:
                raise EmptyPromptError(
                    f"prompt {index} renders to no tokens for term {t!r} (its template adds "
                    "none); give some text to continue", f"prompts[{index}]")
            limit = self.composition.context_length(t)
            if limit is None:
                continue
            if length >= limit:
                raise PromptTooLongError(
                    f"prompt {index} is {length} tokens for term {t!r}, but its model's context "
                    f"holds {limit}; shorten the prompt (leave room for the completion)"
                )
            budget = min(budget, limit - length)
        return budget
