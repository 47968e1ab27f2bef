"""Drafting a speculative round's block: the draft's forwards, the guesses read along with
them, and where each row's block ends.

A mixin of `SpeculativeDecoder` (speculative.py), which owns the round: this is the part of it
that runs the draft model before the other models verify. It relies on the decoder's rows,
batches, texts and `_forward` / `_propose` / `_ends`.
"""

from __future__ import annotations

import torch

from emulate.compose.combine import compose_logprobs


class BlockDrafting:
    """Drafting up to k tokens per row for one round (see `_draft`)."""
    def _draft(self, k: int, pending, logits: dict, fed: dict, params, done):
        """Draft up to k tokens per row: (drafts (rows, width), proposals per position, known,
        limits), known[r] the block positions whose draft logits row r has, limits[r] how many
        of its drafts row r's block holds.

        Rows advance independently. A draft forward reads, for each row whose next position's
        logits are unknown, its last token (the round's lead first) and its own guess of the
        tokens after it, as far as every such row has one; the other rows read nothing. A row
        that drafts its guesses itself needs no forward for those positions; a guess it does
        not draft is forgotten by that row alone, with the ones after it. A row stops where it
        drafted its end, or where the draft is unsure (its likeliest token below `stop`: a
        person's name or fact the draft never read), so the block ends there and that position
        is judged as the round's last; drafting stops when every row has stopped. A greedy row
        that is unsure where its texts say what comes proposes that instead (`_lead`); past a
        lead, a guess, it drafts on only as far as its forwards have already read.
        """
        n = len(self.rows)
        drafts, proposals = torch.zeros(n, k, dtype=torch.long), []
        known = [0 if pending is not None else 1] * n
        guessed: list[list[int]] = [[] for _ in range(n)]  # per row: read, not yet drafted
        limits = [k] * n  # a row's block ends before this position
        led_before = [False] * n  # a row whose block holds a lead drafts on only as read
        while len(proposals) < k:
            j = len(proposals)
            for r in range(n):
                if led_before[r] and known[r] == j and limits[r] > j:
                    limits[r] = j
            need = [r for r in range(n) if known[r] == j and limits[r] > j]
            if need:
                guesses = self._guesses(drafts[:, :j], k - j, need)
                # Positions past the shortest guess will need a forward anyway: reading more
                # would only widen this one. (A guess that misses is forgotten by its row alone.)
                width = min(len(guesses[r]) for r in need)
                guesses = [g[:width] for g in guesses]
                self._read(j, need, guesses, pending, drafts, logits, fed)
                for r in need:
                    known[r], guessed[r] = j + 1, guesses[r]
            missed, led = [0] * n, {}
            if self.stop > 0:
                unsure = self._unsure(logits, j, [r for r in range(n) if limits[r] > j])
                for r, logq in unsure.items():
                    lead = self._lead(r, drafts[r, :j].tolist(), logq, params[r])
                    if lead is not None:
                        led[r] = lead
                        self.leads += 1
                    else:
                        limits[r], missed[r], guessed[r] = j, len(guessed[r]), []
            if all(limit <= j for limit in limits):
                if any(missed):
                    self._forget(missed, fed)
                return drafts[:, :j], proposals, known, limits
            proposals.append(self._propose(logits, j, params, done))
            for r, token in led.items():
                proposals[-1][0][r], led_before[r] = token, True
            drafts[:, j] = proposals[-1][0]
            for r, token in enumerate(drafts[:, j].tolist()):
                if limits[r] <= j:
                    continue
                if self._ends(self.rows[r], token):
                    limits[r], missed[r], guessed[r] = j + 1, len(guessed[r]), []
                elif guessed[r] and guessed[r][0] == token:
                    known[r], guessed[r] = known[r] + 1, guessed[r][1:]
                elif guessed[r]:  # this guess and the ones after it were read in vain
                    missed[r], guessed[r] = len(guessed[r]), []
            if any(missed):
                self._forget(missed, fed)
            if all(limit <= j + 1 for limit in limits):
                return drafts[:, : j + 1], proposals, known, limits
        return drafts, proposals, known, limits

    def _unsure(self, logits: dict, j: int, rows: list[int]) -> dict[int, torch.Tensor]:
        """Of `rows`, those whose draft puts less than `stop` on its likeliest token at block
        position j (read at temperature 1, before any filter), with the draft's log-probs."""
        if not rows:
            return {}
        if list(self.draft_weights.values()) == [1]:  # one term as it is: its own softmax
            logq = torch.log_softmax(logits[self.draft_terms[0]][j][rows].float(), dim=-1)
        else:
            weights = torch.tensor([list(self.draft_weights.values())])
            weights = weights.expand(len(rows), -1).to(logits[self.draft_terms[0]][j])
            logq = compose_logprobs([logits[t][j][rows] for t in self.draft_terms], weights)
        top = logq.max(dim=-1).values.exp().cpu().tolist()
        return {r: logq[i] for i, (r, p) in enumerate(zip(rows, top, strict=True))
                if p < self.stop}

    def _lead(self, r: int, drafts: list[int], logq: torch.Tensor, params) -> int | None:
        """For a greedy row whose draft is unsure: the token its texts say comes next (after
        the longest match; among equals, the one the draft finds likeliest), proposed in the
        draft's place; None
        where the texts say nothing (the row's block ends). Greedy output is p's argmax
        whatever is proposed, so a lead changes no output, only how many tokens a round
        keeps: a name the draft never read is copied from the question, a phrase from the
        composition's earlier answers. Sampled rows keep the draft's own proposals."""
        if not params.greedy or self.texts is None:
            return None
        found = self.texts.candidates(self.rows[r], drafts)
        return max(found[0], key=lambda t: float(logq[t])) if found else None

    def _read(self, j: int, need: list[int], guesses, pending, drafts, logits, fed) -> None:
        """One draft forward: each row in `need` reads its token before block position j (the
        round's lead when j == 0) and its guesses, right-padded; its logits land at positions
        j, j+1, ... The other rows read padding, which takes no place in their caches."""
        width = 1 + max(len(guesses[r]) for r in need)
        tokens = torch.zeros(len(self.rows), width, dtype=torch.long)
        valid = torch.zeros(len(self.rows), width, dtype=torch.bool)
        for r in need:
            row = [0 if j == 0 else int(drafts[r, j - 1])] + guesses[r]
            tokens[r, : len(row)] = torch.tensor(row)
            valid[r, : len(row)] = True
        if j == 0 and pending is not None:
            self._forward(self.draft_keys, tokens[:, 1:], logits, fed, lead=pending,
                          valid=valid, at=j)
        else:
            self._forward(self.draft_keys, tokens, logits, fed, valid=valid, at=j)
        self.draft_forwards += 1

    def _guesses(self, drafts: torch.Tensor, limit: int, need: list[int]) -> list[list[int]]:
        """Per row in `need`, up to `limit` tokens its texts suggest after its drafts so far."""
        found: list[list[int]] = [[] for _ in self.rows]
        for r in need if self.texts is not None and limit > 0 else ():
            found[r] = self.texts.guesses(self.rows[r], drafts[r].tolist(), limit)
        return found

    def _forget(self, missed: list[int], fed: dict) -> None:
        """Row r's draft caches forget the last missed[r] tokens they read (guesses it did not
        draft); trailing columns no row uses go. Their logits stay behind, to be overwritten
        when the row reads again."""
        counts = torch.tensor(missed)
        for key in self.draft_keys:
            batch = self.batches[key]
            batch.forget(counts.repeat(len(self.groups[key])))
            unused = batch.trailing_holes(fed[key])
            batch.rewind(unused)
            fed[key] -= unused
