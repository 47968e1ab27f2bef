"""How many tokens a speculative round drafts: chosen per round from what earlier rounds measured.

k = 0 is a round with no drafts: every model reads each row's last token once and each row takes
one token from the composed distribution, which is a lockstep step. Drafting pays only where
verifying a block of k + 1 tokens costs far less than k + 1 steps and the drafts are accepted
often enough: with few rows, or on an accelerator with room to spare. On a CPU with many rows a
forward's cost grows with the tokens it reads, so a round costs about as much as the tokens it
yields, plus the drafts. Which case holds is measured per row count, never assumed.
"""

from __future__ import annotations

import math
from collections import Counter

EXPLORE_EVERY = 16  # every 16th round at a row count measures the best k of the other kind
MEMORY = 0.3  # weight of the newest round in a running average


class AdaptiveK:
    """What the rounds of one composition's speculative decoders (one draft and lookup) measured,
    and the k it implies for the next round. Decoders of one composition share it.

    With per-position acceptance a, k drafts yield (1 - a^(k+1)) / (1 - a) tokens per row, and a
    round without drafts yields 1. A round's time is measured for each k tried with this many
    rows, and predicted for the drafting k not yet tried as (k + a^k) drafted tokens plus a fixed
    part (verifying forwards, bookkeeping), both measured at this many rows (else at the nearest
    row count measured, scaled by the ratio of the two row counts' rounds without drafts: one
    row's round costs a third of sixteen's on a CPU, so a model shared by all row counts would
    send a full batch to try every large k in turn). The tokens a round yields come from how
    often a row's block reached each position (its survival, pooled over every round long
    enough to reach it, whatever its k): drafts that stop where the draft is unsure, or end,
    survive less than acceptance predicts, and a k never tried is predicted from the survival
    measured up to the longest k tried, not from acceptance alone. The k with the
    most expected tokens per second runs, 0 included. Rounds without drafts are measured twice
    at a row count before they compete, and every `EXPLORE_EVERY`-th round at a row count runs
    the best k of the kind that lost (0, or the best k > 0), so both times stay current as load
    changes. Acceptance comes from every round
    (one without drafts still judges the draft's proposal for the position it fills), so drafting
    resumes as soon as the rows' drafts are accepted again.
    """

    def __init__(self, judged: float = 4.0, passed: float = 3.0):
        self.judged, self.passed = judged, passed  # running counts of judged / accepted drafts
        # rows -> (s per drafted token, rest of a round)
        self.costs: dict[int, tuple[float, float]] = {}
        self.seconds: dict[tuple[int, int], tuple[float, int]] = {}  # (rows, k) -> (s, rounds)
        self.rounds: Counter = Counter()  # rows -> choices made for that many rows
        # draft position i (1, 2, ...) -> running counts of rows whose round drafted that far
        # (tried) and whose accepted drafts reached it (reached), where rounds reported them
        self.tried: Counter = Counter()
        self.reached: Counter = Counter()

    @property
    def acceptance(self) -> float:
        return min(self.passed / self.judged, 0.99)

    def record(self, rows: int, k: int, judged: int, passed: int, seconds: float,
               drafting: float, kept: list[int] | None = None) -> None:
        """A round of up to k drafts (0: none) for `rows` rows, which judged `judged` positions
        and accepted `passed`, took `seconds`, `drafting` of them drafting, and kept `kept[r]`
        drafts of row r if given. Not a round cut short by a budget, nor a first round (which
        reads prompts or nothing)."""
        self.judged = 0.8 * self.judged + judged
        self.passed = 0.8 * self.passed + passed
        old, count = self.seconds.get((rows, k), (seconds, 0))
        self.seconds[rows, k] = (_mix(old, seconds), count + 1)
        for i in range(1, k + 1) if kept is not None else ():
            self.tried[i] = 0.8 * self.tried[i] + len(kept)
            self.reached[i] = 0.8 * self.reached[i] + sum(n >= i for n in kept)
        if k > 0:  # a round without drafts has no drafted part to split off
            costs = (drafting / k, seconds - drafting)
            old_costs = self.costs.get(rows, costs)
            self.costs[rows] = (_mix(old_costs[0], costs[0]), _mix(old_costs[1], costs[1]))

    def choose(self, rows: int, k: int, k_max: int) -> int:
        """The k of the next round for `rows` rows (0: no drafts); `k` when nothing is known."""
        self.rounds[rows] += 1
        if not self.costs:
            return min(k, k_max)  # nothing measured yet: the given k
        if self.seconds.get((rows, 0), (0.0, 0))[1] < 2:
            return 0
        yields = self.yields(k_max)  # one pass over the positions, not one per k
        rates = [self.rate(rows, k, yields[k]) for k in range(k_max + 1)]
        drafting = max(range(1, k_max + 1), key=rates.__getitem__)
        best = drafting if rates[drafting] >= rates[0] else 0
        if self.rounds[rows] % EXPLORE_EVERY == 0:
            return 0 if best else drafting
        return best

    def rate(self, rows: int, k: int, tokens: float | None = None) -> float:
        """Expected tokens per second per row of a round of k drafts for `rows` rows (that
        round's `expected_tokens`, if given)."""
        a = self.acceptance
        spent, count = self.seconds.get((rows, k), (0.0, 0))
        if count < 2:
            nearest = min(self.costs, key=lambda measured: abs(math.log(measured / rows)))
            draft, fixed = self.costs[nearest]
            spent = ((k + a**k) * draft + fixed) * self._scale(rows, nearest)
        return (self.expected_tokens(k) if tokens is None else tokens) / spent

    def expected_tokens(self, k: int) -> float:
        """Tokens a row gets from a round of k drafts (see `yields`)."""
        return self.yields(k)[k]

    def yields(self, k_max: int) -> list[float]:
        """Per k up to k_max, the tokens a row gets from a round of k drafts: 1 + the sum over
        positions of how often a block reaches them: measured where rows' rounds drafted that
        far (at least two rows' worth), beyond that the last measured survival times the
        acceptance per position. (The counts of the positions a round drafts decay with it, so
        drafts that stop passing stop drafting within a few rounds; once k = 0 runs, the
        rounds that explore drafting renew them.)"""
        out, survival = [1.0], 1.0
        for i in range(1, k_max + 1):
            survival = (self.reached[i] / self.tried[i] if self.tried[i] >= 2
                        else survival * self.acceptance)
            out.append(out[-1] + survival)
        return out

    def _scale(self, rows: int, measured: int) -> float:
        """How much dearer a round is at `rows` rows than at `measured` rows, by their rounds
        without drafts (1 where either is unmeasured)."""
        here, there = self.seconds.get((rows, 0)), self.seconds.get((measured, 0))
        return here[0] / there[0] if here and there and there[0] > 0 else 1.0


def _mix(old: float, new: float) -> float:
    return (1 - MEMORY) * old + MEMORY * new
