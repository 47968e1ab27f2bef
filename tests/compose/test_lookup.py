"""N-gram lookup: what the draft's guesses are made of, and that they change no output."""

from __future__ import annotations

import copy

import pytest
from speculative_setup import PROMPTS, assert_same, run, single_thread, upscaled_composition
from tiny_models import make_tokenizer

from emulate import GenerationParamsError, SamplingParams
from emulate.compose.lookup import NgramIndex, candidates, guess
from emulate.compose.speculative import SpeculativeDecoder


@pytest.fixture(scope="module")
def upscaled():
    with single_thread():
        yield upscaled_composition(make_tokenizer())


def test_guess_continues_the_last_occurrence_of_the_longest_match():
    index = NgramIndex([5, 1, 2, 3, 4, 9, 1, 2, 7, 8])
    assert index.guess([0, 1, 2], 2, limit=3) == [7, 8]  # the last "1 2" wins
    assert index.guess([3, 4], 2, limit=3) == [9, 1, 2]
    assert index.guess([6, 2], 2, limit=3) == []
    assert guess([index], [9, 1, 2], limit=2) == [7, 8]
    assert guess([index], [6, 4], limit=2) == [9, 1]  # falls back to the last token
    assert guess([index], [6], limit=0) == []


def test_an_ngram_counts_once_the_token_after_it_is_known():
    index = NgramIndex([1, 2, 3])
    assert index.guess([2, 3], 2, limit=4) == []  # the text ends there: nothing follows yet
    index.extend([1, 2])
    assert index.guess([0, 2, 3], 2, limit=4) == [1, 2]


def test_indexes_are_tried_in_order_at_each_length():
    own, history = NgramIndex([1, 2, 3]), NgramIndex([7, 1, 2, 4, 2, 5])
    assert guess([own, history], [7, 1, 2], limit=1) == [4]  # only history has "7 1 2"
    assert guess([own, history], [9, 1, 2], limit=1) == [3]  # "1 2": own first
    assert guess([own, history], [9, 9, 2], limit=1) == [3]  # "2": own first


def test_past_capacity_the_older_half_is_forgotten():
    index = NgramIndex(range(10), capacity=8)
    assert index.tokens == [6, 7, 8, 9]
    assert index.guess([6], 1, limit=2) == [7, 8]
    assert index.guess([2], 1, limit=2) == []
    index.extend([6, 1])
    assert index.guess([6], 1, limit=2) == [1]


def test_a_new_token_in_a_slot_is_skipped_over():
    # "of Tigaen is Perrin ." then "of Zhith": Zhith was never seen; "of" and one more token
    # were followed by "is Perrin".
    index = NgramIndex([10, 20, 30, 40, 50])
    assert guess([index], [10, 99], limit=2) == [30, 40]
    # Two matched tokens and a free one outrank one matched token.
    index = NgramIndex([1, 2, 3, 4, 8, 6])
    assert guess([index], [1, 2, 8], limit=2) == [4, 8]
    assert guess([index], [5, 8], limit=2) == [6]


def test_candidates_are_every_next_token_grouped_longest_match_first():
    own, history = NgramIndex([1, 2, 3, 9, 2, 6]), NgramIndex([7, 1, 2, 4, 5, 2, 8])
    # "7 1 2" (history, 3 tokens) -> 4; "1 2" -> 3 (own) and 4 (history, already listed);
    # "2" -> 6 (own's last "2"), a free slot after own's "1" -> 3, then history's 8 and 4.
    assert candidates([own, history], [7, 1, 2]) == [[4], [3, 4], [6, 3, 8, 4]]
    assert candidates([own, history], [0, 0, 5]) == [[2]]  # only history's "5"
    assert candidates([own], [0, 0, 0]) == []


def test_lookup_guesses_save_draft_forwards_and_change_nothing(upscaled, monkeypatch):
    """Guesses from the rows' own text and from earlier answers (the history) only decide how
    many forwards the draft takes: greedy and sampled rows, batched, come out as without them,
    whether the guesses hit (a second run of the same prompts) or miss part-way (new seeds)."""
    missed = []
    forget = SpeculativeDecoder._forget
    monkeypatch.setattr(SpeculativeDecoder, "_forget",
                        lambda self, counts, fed: (missed.append(sum(counts)),
                                                   forget(self, counts, fed)))
    spec = {"draft": "large + 0.5*(chat - small)", "k": 4, "adaptive": False}

    def mixed(seed):
        return [SamplingParams(max_new_tokens=20, temperature=0),
                SamplingParams(max_new_tokens=20, temperature=1.0, seed=seed),
                SamplingParams(max_new_tokens=14, temperature=0.8, top_k=20, seed=seed + 1),
                SamplingParams(max_new_tokens=20, temperature=0, top_p=0.5),
                SamplingParams(max_new_tokens=16, temperature=1.2, min_p=0.05, seed=seed + 2),
                SamplingParams(max_new_tokens=20, temperature=0)]

    remembering = copy.copy(upscaled)  # a composition of its own: an empty history
    plain, unguessed = run(upscaled, PROMPTS, mixed(7), {**spec, "lookup": False})
    first, cold = run(remembering, PROMPTS, mixed(7), spec)
    again, warm = run(remembering, PROMPTS, mixed(7), spec)
    assert_same(plain, first)
    assert_same(plain, again)
    assert warm.draft_forwards < cold.draft_forwards <= unguessed.draft_forwards
    assert warm.proposed == cold.proposed == unguessed.proposed
    for seed in (20, 30):
        expected, _ = run(upscaled, PROMPTS, mixed(seed), {**spec, "lookup": False})
        got, _ = run(remembering, PROMPTS, mixed(seed), spec)
        assert_same(expected, got)
    assert missed  # some guesses were read and taken back
    own_only, _ = run(remembering, PROMPTS[:2], mixed(7)[:2], {**spec, "lookup": "own"})
    assert_same(plain[:2], own_only)
    with pytest.raises(GenerationParamsError, match="lookup"):
        run(upscaled, PROMPTS[:1], mixed(7)[:1], {"lookup": "everything"})


def test_a_row_forgets_its_missed_guesses_alone():
    """Padding and forgotten guesses take no place: each row's logits after them are those of
    its real tokens read alone (the slow reference: one row, no padding, nothing forgotten)."""
    import torch
    from tiny_models import llama, make_tokenizer

    from emulate.compose.cached_batch import CachedBatch
    from emulate.compose.lean_llama import LeanLlama

    vocab = len(make_tokenizer())
    model = llama(vocab, hidden=64, seed=5).double()
    for forward in (model, LeanLlama.wrap(model)):
        batch = CachedBatch(forward, vocab)
        batch.prefill([[1, 5, 6], [1, 9]])
        # row 0 reads three tokens, row 1 two and a pad; row 0 then forgets its last two
        batch.extend(torch.tensor([[10, 11, 12], [13, 14, 0]]),
                     torch.tensor([[1, 1, 1], [1, 1, 0]]))
        batch.forget(torch.tensor([2, 0]))
        second = batch.extend(torch.tensor([[16, 18], [17, 0]]), torch.tensor([[1, 1], [1, 0]]))
        batch.keep_first(5, torch.tensor([2, 1]))  # row 0 keeps 10, 16; row 1 keeps 13
        holes = batch.attention_mask.shape[1]
        batch.compact(slack=0.0)  # each row's tokens packed together: 5 of 7 columns left
        assert (holes, batch.attention_mask.shape[1]) == (7, 5)
        assert batch.attention_mask.tolist() == [[1] * 5, [0, 0, 1, 1, 1]]
        third = batch.extend(torch.tensor([[20], [21]]))
        assert batch.next_position.tolist() == [6, 4]
        for row, (real, after) in enumerate((([1, 5, 6, 10], [16, 18]),
                                             ([1, 9, 13, 14], [17]))):
            alone = CachedBatch(forward, vocab)
            alone.prefill([real])
            expected = alone.extend(torch.tensor([after]))[0]
            assert torch.allclose(second[row, : len(after)], expected, atol=1e-9, rtol=0)
        for row, real in enumerate(([1, 5, 6, 10, 16, 20], [1, 9, 13, 21])):
            alone = CachedBatch(forward, vocab)
            assert torch.allclose(third[row, 0], alone.prefill([real])[0], atol=1e-9, rtol=0)
