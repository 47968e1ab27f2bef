"""Guesses of what the draft will write next, looked up in text seen before.

A draft proposes tokens one forward at a time. When it is writing text that appeared before (in
its own prompt or answer, or in an earlier answer of the same composition), the tokens that
followed the last occurrence of the current n-gram are a guess of its next tokens. The draft then
reads its last token together with the guesses in one forward and keeps each guess it would have
drafted anyway, so a right guess saves a forward and a wrong one costs a slightly wider forward;
the drafts themselves, and so the output, do not change. (Prompt-lookup decoding, Saxena 2023;
a history shared across requests as in suffix decoding, Oliaro et al. 2024.)
"""

from __future__ import annotations


class NgramIndex:
    """Token text with, for every n-gram (n <= `n_max`), where its last occurrence ended.

    Keeps at most `capacity` tokens: past that it forgets the older half.
    """

    def __init__(self, tokens=(), n_max: int = 3, capacity: int = 1 << 16):
        self.n_max, self.capacity = n_max, capacity
        self.tokens: list[int] = []
        self.after: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token after it
        self.extend(tokens)

    def extend(self, tokens) -> None:
        """Append `tokens`; each n-gram is indexed once the token after it is known."""
        if len(self.tokens) + len(tokens) > self.capacity:
            kept = (self.tokens + list(tokens))[-self.capacity // 2 :]
            self.tokens, self.after = [], {}
            tokens = kept
        text, after = self.tokens, self.after
        for token in tokens:
            end = len(text)
            for n in range(1, min(self.n_max, end) + 1):
                after[tuple(text[end - n : end])] = end
            text.append(int(token))

    def guess(self, context: list[int], n: int, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the last occurrence of context's last n tokens."""
        if n > len(context):
            return []
        start = self.after.get(tuple(context[-n:]))
        return [] if start is None else self.tokens[start : start + limit]


def guess(indexes: list[NgramIndex], context: list[int], limit: int) -> list[int]:
    """The guess of the longest match, trying `indexes` in order at each length.

    A match is the context's last n tokens, or else the n tokens before its last one with the
    last one free: a slot filled with a new name or number ("of Zhith") is guessed to go on as
    it did after the same words and another filler ("of Tigaen is ..." gives "is ...")."""
    if limit <= 0:
        return []
    for n in range(max(index.n_max for index in indexes), 0, -1):
        for index in indexes:
            found = index.guess(context, n, limit)
            if found:
                return found
        for index in indexes:
            found = index.guess(context[:-1], n, limit + 1)[1:]
            if found:
                return found
    return []


def candidates(indexes: list[NgramIndex], context: list[int]) -> list[list[int]]:
    """The tokens that followed a match of the context's end in `indexes` (exact matches and
    the free-slot matches of `guess`), grouped by match length, longest first: where the draft
    is unsure of its next token, the texts may still say what comes."""
    found: list[list[int]] = []
    for n in range(max(index.n_max for index in indexes), 0, -1):
        here = []
        for index in indexes:
            for tokens in (index.guess(context, n, 1), index.guess(context[:-1], n, 2)[1:]):
                if tokens and tokens[0] not in here:
                    here.append(tokens[0])
        if here:
            found.append(here)
    return found


class RowTexts:
    """What a batch's guesses draw on: each row's own text (prompt, then answer) and, if given,
    a history of earlier finished texts shared by a composition's decoders."""

    def __init__(self, prompts: list[list[int]], history: NgramIndex | None = None):
        self.own = [NgramIndex(ids) for ids in prompts]
        self.history = history

    def extend(self, other: RowTexts) -> None:
        """Take in another batch's rows (their indexes follow this batch's)."""
        self.own += other.own

    def guesses(self, index: int, drafts: list[int], limit: int) -> list[int]:
        """Up to `limit` tokens row `index`'s texts suggest after its drafts so far."""
        own = self.own[index]
        indexes = [own] if self.history is None else [own, self.history]
        return guess(indexes, own.tokens[-own.n_max :] + drafts, limit)

    def candidates(self, index: int, drafts: list[int]) -> list[int]:
        """`candidates` of row `index`'s texts after its drafts so far."""
        own = self.own[index]
        indexes = [own] if self.history is None else [own, self.history]
        return candidates(indexes, own.tokens[-own.n_max :] + drafts)

    def remember(self, index: int, tokens: list[int], finished: bool) -> None:
        """Add a row's new tokens to its text; a finished row's text joins the history."""
        own = self.own[index]
        own.extend(tokens)
        if finished and self.history is not None:
            self.history.extend(own.tokens)
