"""How many tokens a speculative round drafts: chosen per round from what earlier rounds measured.

k = 0 is a round with no drafts: every model reads each row's last token once and each row takes
one token from the composed distribution, which is a lockstep step. Drafting pays only where
verifying a block of k + 1 tokens costs far less than k + 1 steps: with few rows, or on an
accelerator with room to spare. On a CPU with many rows a forward's cost grows with the tokens
it reads, so a round costs about as much as the tokens it yields, plus the drafts. Which case
holds is measured, per row count, never assumed.
"""

from __future__ import annotations

from collections import Counter

EXPLORE_EVERY = 16  # every 16th round at a row count tries the side that measured slower
MEMORY = 0.3  # weight of the newest round in a running average


class AdaptiveK:
    """What the rounds of one composition's speculative decoders (one draft and lookup) measured,
    and the k it implies for the next round. Decoders of one composition share it.

    Two choices, each from measurements:
    - whether to draft at all: the tokens per second of rounds with drafts and of rounds
      without (k = 0), each a running average per row count. The faster side runs; each side is
      measured twice at a row count before that, and every `EXPLORE_EVERY`-th round runs the
      slower side once, so both figures stay current as load and acceptance change.
    - how many to draft: with per-position acceptance a, k drafts yield (1 - a^(k+1)) / (1 - a)
      tokens per row. A round's time is measured for each k tried with this many rows, and
      predicted for the others as (k + a^k) drafted tokens plus a fixed part (verifying
      forwards, bookkeeping); the k with the most tokens per second is drafted.
    """

    def __init__(self, judged: float = 4.0, passed: float = 3.0):
        self.judged, self.passed = judged, passed  # running counts of judged / accepted drafts
        self.costs: tuple[float, float] | None = None  # (s per drafted token, rest of a round)
        self.seconds: dict[tuple[int, int], tuple[float, int]] = {}  # (rows, k) -> (s, rounds)
        self.speed: dict[tuple[int, bool], tuple[float, int]] = {}  # (rows, drafts?) -> tok/s
        self.rounds: Counter = Counter()  # rows -> choices made for that many rows

    @property
    def acceptance(self) -> float:
        return min(self.passed / self.judged, 0.99)

    def record(self, rows: int, k: int, judged: int, passed: int, tokens: int,
               costs: tuple[float, float, float] | None) -> None:
        """A round of k drafts for `rows` rows judged `judged` positions, accepted `passed` and
        emitted `tokens`. `costs` (seconds per drafted token, the rest of the round, the whole
        round) is None for a round whose time says nothing (one that read prompts too)."""
        self.judged = 0.8 * self.judged + judged
        self.passed = 0.8 * self.passed + passed
        if costs is None:
            return
        draft_cost, fixed_cost, seconds = costs
        _average(self.speed, (rows, k > 0), tokens / max(seconds, 1e-9))
        _average(self.seconds, (rows, k), seconds)
        if k > 0:  # a round without drafts splits into no drafted and fixed parts
            old = self.costs or (draft_cost, fixed_cost)
            self.costs = (_mix(old[0], draft_cost), _mix(old[1], fixed_cost))

    def choose(self, rows: int, k: int, k_max: int) -> int:
        """The k of the next round for `rows` rows (0: no drafts); `k` when nothing is known."""
        drafting = self.best_k(rows, k_max) if self.costs is not None else min(k, k_max)
        self.rounds[rows] += 1
        with_drafts, without = self.speed.get((rows, True)), self.speed.get((rows, False))
        if with_drafts is None or with_drafts[1] < 2:
            return drafting
        if without is None or without[1] < 2:
            return 0
        faster = with_drafts[0] >= without[0]
        if self.rounds[rows] % EXPLORE_EVERY == 0:
            faster = not faster
        return drafting if faster else 0

    def best_k(self, rows: int, k_max: int) -> int:
        """The number of drafts (at least 1) with the most expected tokens per second."""
        a = self.acceptance
        draft, fixed = self.costs

        def rate(k: int) -> float:
            spent, count = self.seconds.get((rows, k), (0.0, 0))
            cost = spent if count >= 2 else (k + a**k) * draft + fixed
            return (1 - a ** (k + 1)) / (1 - a) / cost

        return max(range(1, k_max + 1), key=rate)


def _mix(old: float, new: float) -> float:
    return (1 - MEMORY) * old + MEMORY * new


def _average(table: dict, key, value: float) -> None:
    old, count = table.get(key, (value, 0))
    table[key] = (_mix(old, value), count + 1)
