"""Rounds without drafts (k = 0): a lockstep step inside a speculative decoder, chosen where
drafting does not pay. Output stays exactly the composition's whatever each round's k, and the
choice follows what rounds at each row count measured."""

from __future__ import annotations

import copy
import itertools

import pytest
from speculative_setup import PROMPTS, UPSCALE, greedy, run, upscaled_composition
from tiny_models import make_tokenizer

from emulate import SamplingParams
from emulate.compose.adaptive_k import EXPLORE_EVERY, AdaptiveK

HALFWAY = "large + 0.5*(chat - small)"  # rows accept different numbers of drafts
FIXED = {"draft": HALFWAY, "k": 3, "adaptive": False}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def upscaled():
    return upscaled_composition(make_tokenizer())


class Script:
    """Sets each round's k from a list (cycled) instead of from measurements."""

    def __init__(self, ks):
        self.ks = itertools.cycle(ks)
        self.chosen: list[int] = []

    def choose(self, rows: int, k: int, k_max: int) -> int:
        self.chosen.append(next(self.ks))
        return self.chosen[-1]

    def record(self, *args, **kwargs) -> None:
        pass


def scripted(composition, prompts, params, ks, spec=None):
    spec = {"draft": HALFWAY, **(spec or {}), "adaptive": True}
    decoder = composition.decoder(prompts, copy.deepcopy(params), spec)
    decoder.learned = Script(ks)
    while not decoder.done:
        decoder.step()
    return [decoder.completion(i) for i in range(len(prompts))], decoder


def mixed() -> list[SamplingParams]:
    return [SamplingParams(max_new_tokens=18, temperature=0),
            SamplingParams(max_new_tokens=18, temperature=1.0, seed=7),
            SamplingParams(max_new_tokens=12, temperature=0.8, top_k=20, seed=8),
            SamplingParams(max_new_tokens=18, temperature=0, top_p=0.5),
            SamplingParams(max_new_tokens=16, temperature=1.2, top_p=0.9, min_p=0.05, seed=9),
            SamplingParams(max_new_tokens=18, temperature=0)]


def tokens(completions):
    return [(c.token_ids, c.text, c.finish_reason) for c in completions]


def test_rounds_without_drafts_are_lockstep_steps(upscaled):
    params = greedy(upscaled, PROMPTS, n=20)
    lockstep, _ = run(upscaled, PROMPTS, copy.deepcopy(params))
    got, decoder = scripted(upscaled, PROMPTS, params, [0])
    assert tokens(got) == tokens(lockstep)
    assert decoder.proposed == 0 and set(decoder.learned.chosen) == {0}
    assert decoder.rounds == max(len(c.token_ids) for c in lockstep)  # one token a round
    assert decoder.draft_forwards == decoder.rounds - 1  # the first reads the prefill's logits


@pytest.mark.parametrize("spec", [{}, {"draft": "chat"}, {"draft": UPSCALE, "lookup": False}])
def test_switching_k_mid_generation_keeps_every_row_exact(upscaled, spec):
    """Greedy rows equal lockstep's; every row, sampled too, equals a fixed-k run token for
    token (a position's draws depend on the row's seed and the position only)."""
    ks = [0, 3, 0, 0, 2, 5, 1, 0, 4]
    got, decoder = scripted(upscaled, PROMPTS, mixed(), ks, spec)
    assert 0 < decoder.proposed and decoder.rounds > len(ks)
    fixed, _ = run(upscaled, PROMPTS, mixed(), {**FIXED, **spec, "adaptive": False})
    assert tokens(got) == tokens(fixed)
    lockstep, _ = run(upscaled, PROMPTS, mixed())
    for row in (0, 3, 5):
        assert tokens(got[row : row + 1]) == tokens(lockstep[row : row + 1])


def test_rows_join_a_decoder_running_rounds_without_drafts(upscaled):
    spec = {"draft": HALFWAY, "k": 3}
    script = Script([0, 0, 2, 0])
    decoder = upscaled.decoder(PROMPTS[:3], mixed()[:3], spec)
    decoder.learned = script
    decoder.step()
    decoder.step()
    late = upscaled.decoder(PROMPTS[3:], mixed()[3:], spec, joining=True)
    late.learned = script
    late.step()  # its first tokens, off its prefill
    assert decoder.can_merge(late)
    offset = decoder.merge(late)
    while not decoder.done:
        decoder.step()
    assert offset == 3 and 0 in script.chosen[2:]
    alone = [run(upscaled, [p], [q], FIXED)[0][0] for p, q in zip(PROMPTS, mixed(), strict=True)]
    assert tokens(decoder.completion(i) for i in range(len(PROMPTS))) == tokens(alone)


def measured(learned: AdaptiveK, rows: int, k: int, seconds: float, rounds: int = 2,
             accepted: float = 0.8) -> None:
    """`rounds` whole rounds of k drafts for `rows` rows, each taking `seconds` (half of it
    drafting), in which a fraction `accepted` of the judged positions passed."""
    for _ in range(rounds):
        judged = rows * (k + 1)
        learned.record(rows, k, judged, round(accepted * judged), seconds, seconds / 2)


def test_no_drafts_where_rounds_measured_slower_per_token():
    learned = AdaptiveK()
    assert learned.choose(16, 4, 16) == 4  # nothing measured: the given k
    measured(learned, 16, 4, seconds=0.050)  # ~3.4 tokens a row in 50 ms
    assert learned.choose(16, 4, 16) == 0  # rounds without drafts are measured twice first
    measured(learned, 16, 0, seconds=0.008)  # 1 token a row in 8 ms: faster
    assert learned.choose(16, 4, 16) == 0
    measured(learned, 2, 4, seconds=0.012)  # at 2 rows, drafting measured faster
    measured(learned, 2, 0, seconds=0.006)
    assert learned.choose(2, 4, 16) > 0
    assert learned.choose(16, 4, 16) == 0


def test_drafting_stops_when_drafts_stop_passing_and_resumes_when_they_pass():
    learned = AdaptiveK()
    measured(learned, 1, 4, seconds=0.012, accepted=0.9)
    measured(learned, 1, 0, seconds=0.005, accepted=0.9)
    assert learned.choose(1, 4, 16) > 0
    measured(learned, 1, 0, seconds=0.005, rounds=6, accepted=0.0)  # the drafts miss
    assert learned.choose(1, 4, 16) == 0
    measured(learned, 1, 0, seconds=0.005, rounds=6, accepted=1.0)  # they pass again
    assert learned.choose(1, 4, 16) > 0


def test_the_kind_that_lost_is_measured_again_now_and_then():
    learned = AdaptiveK()
    measured(learned, 8, 3, seconds=0.010, accepted=0.9)
    measured(learned, 8, 0, seconds=0.008, accepted=0.9)
    ks = [learned.choose(8, 3, 16) for _ in range(3 * EXPLORE_EVERY)]
    plain = [i for i, k in enumerate(ks) if k == 0]
    assert len(plain) == 3 and all(k > 0 for i, k in enumerate(ks) if i not in plain)
    # Load changes: rounds without drafts now measure much faster, and take over; drafting
    # is still tried every EXPLORE_EVERY-th round.
    measured(learned, 8, 0, seconds=0.0005, rounds=6, accepted=0.9)
    ks = [learned.choose(8, 3, 16) for _ in range(2 * EXPLORE_EVERY)]
    assert ks.count(0) == 2 * EXPLORE_EVERY - 2


def test_rounds_without_drafts_leave_the_draft_cost_model_alone():
    learned = AdaptiveK()
    measured(learned, 4, 2, seconds=0.010)
    costs = learned.costs
    measured(learned, 4, 0, seconds=0.003)
    assert learned.costs == costs and learned.seconds[4, 0][1] == 2
    assert learned.rate(4, 0) == pytest.approx(1 / 0.003)  # one token a row per round


def test_untried_k_is_predicted_from_rounds_at_as_many_rows():
    # A full batch measured k = 3 (and rounds without drafts), then one row ran alone for a
    # while, where rounds cost a third as much. The full batch's next k comes from what full
    # batches cost, not from the lone row's cheap rounds (which would make every untried large
    # k look best, and have the batch try each in turn).
    learned = AdaptiveK()
    measured(learned, 16, 3, seconds=0.030, accepted=0.85)
    measured(learned, 16, 0, seconds=0.0125, accepted=0.85)
    measured(learned, 1, 5, seconds=0.011, rounds=10, accepted=0.85)
    measured(learned, 1, 0, seconds=0.006, accepted=0.85)
    assert learned.choose(16, 4, 16) == 3
    assert learned.choose(1, 4, 16) > 3  # the lone row keeps its long blocks
    measured(learned, 12, 0, seconds=0.011, accepted=0.85)
    assert learned.choose(12, 4, 16) in (3, 4)  # drafting costs as at the nearest: 16 rows


def test_untried_rounds_cost_as_much_more_as_rounds_without_drafts_do():
    # Drafting was measured for one row only, where it did not pay (4 ms for ~1.9 tokens
    # against 1 ms for 1). Sixteen rows' rounds without drafts cost ten times one row's: the
    # prediction for drafting at 16 rows scales by as much, so it does not pay there either
    # (unscaled, one row's cheap rounds would make any k look best to the full batch).
    learned = AdaptiveK()
    measured(learned, 1, 4, seconds=0.004, rounds=10, accepted=0.5)
    measured(learned, 1, 0, seconds=0.001, accepted=0.5)
    measured(learned, 16, 0, seconds=0.010, accepted=0.5)
    assert learned.choose(1, 4, 16) == 0
    assert learned.choose(16, 4, 16) == 0


def test_blocks_that_stop_early_make_no_longer_k_look_better():
    # Every block kept one draft and then stopped (the draft unsure at its second position),
    # though drafts that were judged mostly passed: a longer block would yield no more, and the
    # shortest drafting round is the one to run, not an untried long one predicted from
    # acceptance alone.
    learned = AdaptiveK()
    for _ in range(3):
        learned.record(1, 4, judged=2, passed=2, seconds=0.010, drafting=0.005, kept=[1])
    measured(learned, 1, 0, seconds=0.004, accepted=1.0)
    assert learned.expected_tokens(4) == pytest.approx(2.0)
    assert learned.expected_tokens(12) == pytest.approx(2.0)
    assert learned.choose(1, 4, 16) == 1


def test_survival_measured_at_short_blocks_extends_by_acceptance():
    learned = AdaptiveK()
    for _ in range(3):  # two-draft blocks, both always kept
        learned.record(2, 2, judged=6, passed=4, seconds=0.010, drafting=0.005, kept=[2, 2])
    a = learned.acceptance
    assert learned.expected_tokens(2) == pytest.approx(3.0)
    assert learned.expected_tokens(4) == pytest.approx(3.0 + a + a * a)
