"""Exact speculative decoding of a composition: a cheap draft proposes, the formula decides.

Each round, the draft (by default the composition's small tuned term) proposes k tokens one at a
time through its own KV cache; every other model then scores the whole block in one forward, and
the composed distribution p at each of the k+1 positions decides, per row, by the rule in
acceptance.py (if all k stand, the bonus token is drafted from q and judged too: a draw from p).
p and q carry the row's temperature and top-k/top-p/min-p, p also the plausibility filter, so
the output follows the lockstep decoder's exactly; greedy rows match it token for token. A
round with k = 0 (chosen where drafting does not pay, adaptive_k.py) reads each row's last token
once in every model and judges only the last position: a lockstep step, at a lockstep step's
cost, whose draws depend on the row's seed and position as every round's do.

Rows advance independently. The draft's forwards read guesses of its next tokens along
(lookup.py); each row keeps the guesses it drafts itself and forgets the rest. Every model's
cache holds a row's accepted tokens except the last one, which leads the next round's block;
rejected positions become holes in that row's attention mask (no position id), packed away
once they are many, so no forward is ever redone. Rows that join between rounds (`joining`)
read their whole prompts in every model; their first round takes each row's first token off
that prefill, reading nothing (a round with k = 0 and no lead), which leaves them in exactly
that state, so a joining row's first token waits for no one's round.
"""

from __future__ import annotations

import time

import torch

from emulate.compose.acceptance import propose, verdict
from emulate.compose.adaptive_k import AdaptiveK
from emulate.compose.block_drafting import BlockDrafting
from emulate.compose.combine import compose_logprobs
from emulate.compose.decoding import Decoder, Delta, merged
from emulate.compose.drafting import (
    DEFAULT_K,
    DEFAULT_STOP,
    K_MAX,
    check_k,
    check_lookup,
    check_stop,
    composition_state,
    default_draft,
)
from emulate.compose.formula import parse_formula
from emulate.compose.lean_llama import LeanLlama
from emulate.compose.lookup import NgramIndex, RowTexts
from emulate.compose.sampling import SamplingParams, filter_logprobs


class SpeculativeDecoder(BlockDrafting, Decoder):
    """A `Decoder` whose `step()` drafts k tokens per row and keeps those the formula accepts.

    `proposed` and `accepted` count draft tokens (their ratio is `acceptance_rate`); `rounds`
    counts steps that ran the models, `draft_forwards` the draft's forwards. With `adaptive`
    (the default), `learned` (an `AdaptiveK`, shared by the composition's decoders) sets each
    round's k from the measured acceptance and round times: k = 0 where drafting does not pay
    at this many rows, a round that is a lockstep step; `adaptive=False` keeps k (>= 1) fixed.
    `lookup`: guess the draft's next tokens from each row's own text and this composition's
    earlier texts (True), its own text only ("own"), or not at all (False).
    """

    def __init__(self, composition, prompts, params: list[SamplingParams],
                 draft: str | None = None, k: int = DEFAULT_K, adaptive: bool = True,
                 k_max: int = K_MAX, lean: bool | str | None = None,
                 lookup: bool | str = True, joining: bool = False, stop: float = DEFAULT_STOP):
        check_k(k, k_max)
        check_stop(stop)
        self.stop = stop
        # A joining decoder reads the whole prompts in every model, so its first round needs no
        # forward: its rows can then merge into a running decoder's between two rounds.
        self.joining = joining
        self.draft = draft or default_draft(composition)
        self.draft_weights = parse_formula(self.draft, composition.term_names,
                                           composition.parameters)
        self.draft_terms = list(self.draft_weights)
        self.lean = composition.lean if lean is None else lean  # default: as the composition
        super().__init__(composition, prompts, params, extra_terms=self.draft_weights)
        self.draft_keys = [k_ for k_, ts in self.groups.items() if set(ts) & set(self.draft_terms)]
        self.verify_keys = [k_ for k_ in self.groups if k_ not in self.draft_keys]
        self.k, self.k_max, self.adaptive = k, k_max, adaptive
        self.given_k = k  # adaptive: what a round drafts until something is measured
        self.proposed = self.accepted = self.rounds = 0
        # What earlier decoders of this composition, draft and lookup learned (else a prior).
        check_lookup(lookup)
        self.learned = composition_state(composition).setdefault((self.draft, lookup),
                                                                  AdaptiveK())
        # In the first round, self.logits hold the next-token logits after the prefill (of
        # the drafts only, unless the decoder joins), and no token leads the block.
        self._first = True
        # What the draft's guesses draw on: each row's text, with lookup=True also the history.
        history = (composition_state(composition).setdefault("history", NgramIndex())
                   if lookup is True else None)
        own = self.prompt_ids[self.draft_terms[0]]
        self.texts = RowTexts(own, history) if lookup else None
        self.draft_forwards = 0
        self.leads = 0  # tokens proposed from the texts where the draft was unsure

    def _defers(self, key: str) -> bool:
        """The verifying models read the prompts together with the first drafted block: one
        forward instead of two, and the drafts need only the draft model's prefill."""
        return not self.joining and not set(self.groups[key]) & set(self.draft_terms)

    @property
    def takes_rows(self) -> bool:
        """Rows join between two rounds, so not before the first."""
        return super().takes_rows and not self._first

    def can_merge(self, other) -> bool:
        """Between two rounds (both ran one), with the same draft, lookup and forwards."""
        return (super().can_merge(other) and self.takes_rows and not other._first
                and other.learned is self.learned and other.lean == self.lean)

    def merge(self, other) -> int:
        offset = super().merge(other)
        if self.texts is not None:
            self.texts.extend(other.texts)
        return offset

    def composed_logprobs(self) -> torch.Tensor:
        for key in list(self.deferred):
            self._store(key, self.batches[key].prefill(self.deferred.pop(key)))
        return super().composed_logprobs()

    def model_for(self, key: str):
        """As lockstep decoding (the composition's `lean`), unless the speculative options say
        otherwise: `lean="draft"` runs only the draft's model lean, `lean=False` none."""
        model = self.composition.loaded[key].model
        drafts = bool(set(self.groups[key]) & set(self.draft_terms))
        lean = drafts if self.lean == "draft" else self.lean
        return LeanLlama.wrap(model) if lean else model

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    @torch.inference_mode()
    def step(self) -> list[Delta]:
        """One round: draft, verify, accept; return one merged delta per row that advanced."""
        deltas = [self._finish(i, "cancelled") for i in self.rows if i in self._cancelled]
        self._retire()
        if not self.rows:
            return deltas
        rows, params = self.rows, [self.params[i] for i in self.rows]
        free = self._first and self.joining  # first tokens off the prefill: no forward
        if self.adaptive and not free:  # 0: no drafts, a lockstep step (see adaptive_k.py)
            self.k = self.learned.choose(len(rows), self.given_k, self.k_max)
        done = [len(self.assemblers[i].token_ids) for i in rows]
        room = min(self.budget[i] - d for i, d in zip(rows, done, strict=True))
        k = 0 if free else max(0, min(self.k, room - 1))  # never past a row's budget or context
        pending = None if self._first else self._leads(rows)
        logits = {t: [] for t in self.terms}  # term -> [(rows, V)] at block positions 0, 1, ...
        fed = dict.fromkeys(self.groups, 0)
        started = time.perf_counter()
        if pending is None:  # the prefills' logits (deferred models: with the block, below)
            for key in self.groups.keys() - self.deferred.keys():
                for t in self.groups[key]:
                    logits[t].append(self.logits[t])
        if k == 0 and pending is not None and not self.deferred:
            return deltas + self._step_without_drafts(rows, params, pending, done, started)
        full = k
        drafts, proposals, known, limits = self._draft(k, pending, logits, fed, params, done)
        k = drafts.shape[1]  # fewer if every row drafted its end or stopped
        drafted = time.perf_counter()  # the drafts reached the CPU: their forwards are done
        # Verify: every other model scores the pending token and the k drafts in one forward
        # (in the first round, after reading the prompt in the same forward).
        self._forward(self.verify_keys, drafts, logits, fed, lead=pending)

        # Per row: drafts kept, token after. Row r's block is its first limits[r] drafts.
        outcomes: list[list] = [[n, None] for n in limits]
        bonus_passed = 0
        if k:
            best, probs = self._target(logits, k, params)
            for r, outcome in enumerate(outcomes):
                for j, (tokens, q, generators) in enumerate(proposals[: limits[r]]):
                    y = verdict(params[r], int(tokens[r]), best[r, j],
                                 None if probs[r] is None else probs[r][j], q[r], generators[r])
                    if y is not None:
                        outcome[:] = j, y
                        break
        for r, outcome in enumerate(outcomes):
            n = limits[r]
            if outcome[1] is None and n and self._ends(rows[r], int(drafts[r, n - 1])):
                outcome[1] = int(drafts[r, n - 1])  # never emitted: the row ends at its draft
        # The position after a row's block: p and q there; drafting from q and judging against
        # p draws from p, and every position's randomness depends on it alone.
        lacking = [r for r, (_, y) in enumerate(outcomes) if y is None and known[r] <= limits[r]]
        for width in sorted({limits[r] for r in lacking}):  # (a row's guesses may have read it)
            self._read(width, [r for r in lacking if limits[r] == width], [[] for _ in rows],
                       pending, drafts, logits, fed)
        for j in sorted({limits[r] for r, (_, y) in enumerate(outcomes) if y is None}):
            tokens, q, generators = self._propose(logits, j, params, done)
            best, probs = self._target(logits, j + 1, params, first=j)
            for r, outcome in enumerate(outcomes):
                if outcome[1] is None and limits[r] == j:
                    y = verdict(params[r], int(tokens[r]), best[r, 0],
                                 None if probs[r] is None else probs[r][0], q[r], generators[r])
                    outcome[1] = int(tokens[r]) if y is None else y
                    bonus_passed += y is None

        for r, (n, y) in enumerate(outcomes):
            self.proposed += limits[r]
            self.accepted += n
            deltas.append(self._take(rows[r], drafts[r, :n].tolist() + [y]))
        kept = torch.tensor([n for n, _ in outcomes]) + (pending is not None)
        for key, terms in self.groups.items():
            self.batches[key].keep_first(fed[key], kept.repeat(len(terms)))
            self.batches[key].compact()  # rows that kept different numbers leave holes
        for t in self.terms:  # from now on only their row count matters (_retire slices them)
            self.logits[t] = logits[t][0]
        # (Rounds cut by a budget, and first rounds, say nothing about k; ends and stops do.)
        if self.adaptive and full == self.k and pending is not None:
            # Every row judged its accepted drafts and one more position (a rejection, or the
            # position after its block, judged too since that is how its last token is drawn).
            judged = sum(n + 1 for n, _ in outcomes)
            passed = sum(n for n, _ in outcomes) + bonus_passed
            self.learned.record(len(rows), full, judged, passed, time.perf_counter() - started,
                                drafted - started, kept=[n for n, _ in outcomes])
        self._first = False
        self.rounds += 1
        self._retire()
        return deltas

    def _step_without_drafts(self, rows, params, pending, done, started) -> list[Delta]:
        """A round with k = 0 as a lockstep step: every model reads each row's lead, and the
        position after it is drawn as every round's last position is (a draft proposal judged
        against p, so sampled rows draw what a wider round would), with none of the block's
        bookkeeping: nothing is rejected, so no cache keeps or packs anything."""
        logits = {}
        for key, terms in self.groups.items():
            lead = torch.cat([pending[t] for t in terms])[:, None]
            for t, block in zip(terms, self.batches[key].extend(lead).chunk(len(terms)),
                                strict=True):
                logits[t] = [block[:, -1]]
        self.draft_forwards += 1
        if all(p.greedy for p in params):  # p's argmax; the draft's only says what passed
            chosen = self._target(logits, 1, params)[0][:, 0].tolist()
            drafted = self._propose(logits, 0, params, done)[0].tolist()
            passed = sum(d == c for d, c in zip(drafted, chosen, strict=True))
        else:
            tokens, q, generators = self._propose(logits, 0, params, done)
            best, probs = self._target(logits, 1, params)
            chosen, passed = [], 0
            for r in range(len(rows)):
                y = verdict(params[r], int(tokens[r]), best[r, 0],
                            None if probs[r] is None else probs[r][0], q[r], generators[r])
                passed += y is None
                chosen.append(int(tokens[r]) if y is None else y)
        deltas = [self._take(index, [token]) for index, token in zip(rows, chosen, strict=True)]
        for t in self.terms:
            self.logits[t] = logits[t][0]
        if self.adaptive:
            self.learned.record(len(rows), 0, len(rows), passed,
                                time.perf_counter() - started, 0.0)
        self.rounds += 1
        self._retire()
        return deltas

    def _take(self, index: int, tokens: list[int]) -> Delta:
        """Accept a row's tokens of this round up to its end; the lookup remembers them."""
        row_deltas = []
        for token in tokens:
            row_deltas.append(self.accept(index, token))
            if self.finish_reasons[index] is not None:
                break
        delta = merged(row_deltas)
        if self.texts is not None:
            self.texts.remember(index, delta.token_ids, delta.finish_reason is not None)
        return delta

    def _leads(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Per term, the token each row's block starts with: the row's last accepted token."""
        lead = torch.tensor([self.assemblers[i].token_ids[-1] for i in rows])
        return dict.fromkeys(self.terms, lead)

    def _ends(self, index: int, token: int) -> bool:
        """Whether `token` ends row `index` (an end-of-sequence token it does not ignore)."""
        return token in self.composition.eos_token_ids and not self.params[index].ignore_eos

    def _forward(self, keys, tokens: torch.Tensor, logits: dict, fed: dict,
                 lead: dict | None = None, valid: torch.Tensor | None = None,
                 at: int | None = None) -> None:
        """Append `tokens` (rows, t) to the models `keys`, after `lead` (term -> (rows,), the
        round's leading tokens) if given; collect each term's logits per column: appended to
        each term's list, or with `at`, written at positions at, at+1, ... for the rows whose
        column is `valid` (rows, columns; the rest is padding).

        A model whose prefill was deferred reads its prompts and the tokens in one forward, and
        also gives the logits after the prompt (so one more column).
        """
        for key in keys:
            terms = self.groups[key]
            rows = tokens.repeat(len(terms), 1)
            if lead is not None:
                rows = torch.cat([torch.cat([lead[t] for t in terms])[:, None], rows], dim=1)
            if key in self.deferred:
                sequences = [p + r for p, r in zip(self.deferred.pop(key), rows.tolist(),
                                                   strict=True)]
                out = self.batches[key].prefill(sequences, last=rows.shape[1] + 1)
            elif rows.shape[1]:
                out = self.batches[key].extend(
                    rows, None if valid is None else valid.repeat(len(terms), 1))
            else:
                continue
            fed[key] += rows.shape[1]
            for t, block in zip(terms, out.chunk(len(terms)), strict=True):
                if at is None:
                    logits[t].extend(block.unbind(1))
                    continue
                for c, column in enumerate(block.unbind(1)):
                    mask = valid[:, c, None].to(column.device)
                    if at + c < len(logits[t]):
                        logits[t][at + c] = torch.where(mask, column, logits[t][at + c])
                    else:
                        logits[t].append(torch.where(mask, column, 0))

    def _propose(self, logits, j: int, params, done):
        """Draft block position j per row: (tokens, q per row, generator per row)."""
        seeds = [self.generators[i].initial_seed() for i in self.rows]
        return propose([logits[t][j] for t in self.draft_terms],
                       list(self.draft_weights.values()), params, seeds, [d + j for d in done])

    def _target(self, logits, end: int, params, first: int = 0):
        """The lockstep decoder's distribution at block positions first..end-1.

        Returns (argmax (rows, P), probs): probs[r] is (P, V) cpu float64 with the row's
        temperature and filters applied, for sampled rows; None for greedy rows.
        """
        stacked = {t: torch.stack(logits[t][first:end], dim=1) for t in self.terms}
        weights = self.weights[self.rows].to(stacked[self.terms[0]].device)[:, None, :]
        logp = self._plausible(compose_logprobs(list(stacked.values()), weights), stacked)
        best = logp.argmax(dim=-1).cpu()
        probs = [None] * len(params)
        sampled = [r for r, p in enumerate(params) if not p.greedy]
        if sampled:
            flat = logp[sampled].flatten(0, 1)
            flat_params = [params[r] for r in sampled for _ in range(end - first)]
            filtered = filter_logprobs(flat, flat_params).exp().cpu().double()
            blocks = filtered.unflatten(0, (len(sampled), end - first))
            for r, block in zip(sampled, blocks, strict=True):
                probs[r] = block
        return best, probs
