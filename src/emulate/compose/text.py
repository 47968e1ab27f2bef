"""Turning generated token ids into text deltas, with stop strings.

Tokens do not map to text one by one (a multi-byte character spans tokens, sentencepiece drops
leading spaces when decoding a lone token), so each step decodes the whole completion and emits
only what is new. Text that might be the start of a stop string is held back until it is not.
"""

from __future__ import annotations


class TextAssembler:
    """Accumulates one completion's tokens and releases text that is final."""

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.token_ids: list[int] = []
        self.emitted = 0  # characters of the completion already released
        self.text = ""
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Add a token; return the newly final text. Sets `stopped` when a stop string appears."""
        self.token_ids.append(int(token_id))
        self.text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if self.stop:
            cut = self._stop_position()
            if cut is not None:
                self.text = self.text[:cut]
                self.stopped = True
                return self._release(len(self.text))
        final = len(self.text)
        if self.text.endswith("\ufffd"):
            final -= 1  # an incomplete multi-byte character: wait for its other bytes
        return self._release(final - self._held_for_stop(final))

    def finish(self) -> str:
        """Release whatever was held back; the completion is over."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        delta = self.text[self.emitted : upto]
        self.emitted = upto
        return delta

    def _stop_position(self) -> int | None:
        start = max(0, self.emitted - max(len(s) for s in self.stop))
        hits = [i for s in self.stop if (i := self.text.find(s, start)) != -1]
        return min(hits) if hits else None

    def _held_for_stop(self, end: int) -> int:
        """Length of the longest suffix of text[:end] that is a proper prefix of a stop string."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, end), longest, -1):
                if self.text[end - n : end] == s[:n]:
                    longest = n
                    break
        return longest
