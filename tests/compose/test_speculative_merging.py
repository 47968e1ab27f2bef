"""Continuous batching of speculative decoding: rows that join a running speculative decoder
between two rounds decode exactly as if alone, and so do the rows they join."""

from __future__ import annotations

import copy

import pytest
from speculative_setup import PROMPTS, run, upscaled_composition
from tiny_models import make_tokenizer

from emulate import GenerationParamsError, SamplingParams

SPEC = {"draft": "large + 0.5*(chat - small)", "k": 3, "adaptive": False}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def upscaled():
    return upscaled_composition(make_tokenizer())


def mixed(n: int, seed: int) -> list[SamplingParams]:
    """Greedy and sampled rows with different budgets and filters."""
    kinds = [dict(temperature=0), dict(temperature=1.0), dict(temperature=0.8, top_k=20),
             dict(temperature=0, top_p=0.5), dict(temperature=1.2, top_p=0.9, min_p=0.05)]
    return [SamplingParams(max_new_tokens=14 + 2 * i, seed=seed + i, **kinds[(seed + i) % 5])
            for i in range(n)]


def alone(composition, prompts, params, speculative=SPEC):
    return [run(composition, [p], [copy.deepcopy(q)], speculative)[0][0]
            for p, q in zip(prompts, params, strict=True)]


@pytest.mark.parametrize("spec", [SPEC, {**SPEC, "draft": "chat", "k": 2}, {"lookup": "own"}])
def test_rows_joining_between_rounds_decode_as_if_alone(upscaled, spec):
    first, second = PROMPTS[:3], PROMPTS[4:]
    first_params, second_params = mixed(3, 0), mixed(2, 10)
    decoder = upscaled.decoder(first, copy.deepcopy(first_params), spec)
    for _ in range(2):
        decoder.step()
    late = upscaled.decoder(second, copy.deepcopy(second_params), spec, joining=True)
    assert late.joining and not decoder.can_merge(late)  # its first tokens come first
    openers = first_tokens(late)
    assert decoder.can_merge(late)
    offset = decoder.merge(late)
    decoder.step()
    later = upscaled.decoder(PROMPTS[1:2], mixed(1, 20), spec, joining=True)
    openers += first_tokens(later)
    later_offset = decoder.merge(later)
    while not decoder.done:
        decoder.step()
    expected = (alone(upscaled, first, first_params, spec)
                + alone(upscaled, second, second_params, spec)
                + alone(upscaled, PROMPTS[1:2], mixed(1, 20), spec))
    indexes = [0, 1, 2, offset, offset + 1, later_offset]
    for index, want in zip(indexes, expected, strict=True):
        got = decoder.completion(index)
        assert (got.token_ids, got.text, got.finish_reason) == (
            want.token_ids, want.text, want.finish_reason), index
    assert [d.token_ids for d in openers] == [[c.token_ids[0]] for c in expected[3:]]


def first_tokens(joining) -> list:
    """A joining decoder's first step: each row's first token, off the prefill (no forward)."""
    widths = {key: batch.attention_mask.shape[1] for key, batch in joining.batches.items()}
    deltas = joining.step()
    assert all(len(d.token_ids) == 1 for d in deltas) and joining.draft_forwards == 0
    assert widths == {key: b.attention_mask.shape[1] for key, b in joining.batches.items()}
    return deltas


def test_greedy_joined_rows_equal_lockstep(upscaled):
    prompts = PROMPTS[:3]
    params = upscaled.sampling_params(prompts, max_new_tokens=20, temperature=0)
    lockstep, _ = run(upscaled, prompts, copy.deepcopy(params))
    decoder = upscaled.decoder(prompts[:1], copy.deepcopy(params[:1]), True)
    decoder.step()
    late = upscaled.decoder(prompts[1:], copy.deepcopy(params[1:]), True, joining=True)
    first_tokens(late)
    decoder.merge(late)
    while not decoder.done:
        decoder.step()
    assert [decoder.completion(i).token_ids for i in range(3)] == [c.token_ids for c in lockstep]


def test_a_joining_decoder_decodes_alone_too(upscaled):
    """The batcher may start a cohort from a joining decoder when its target went away."""
    params = mixed(3, 5)
    decoder = upscaled.decoder(PROMPTS[:3], copy.deepcopy(params), SPEC, joining=True)
    while not decoder.done:
        decoder.step()
    expected, _ = run(upscaled, PROMPTS[:3], copy.deepcopy(params), SPEC)
    assert [decoder.completion(i).token_ids for i in range(3)] == [
        c.token_ids for c in expected]


def test_what_cannot_merge_says_so(upscaled):
    params = mixed(1, 0)
    running = upscaled.decoder(PROMPTS[:1], copy.deepcopy(params), SPEC)
    fresh = upscaled.decoder(PROMPTS[:1], copy.deepcopy(params), SPEC)  # not built to join
    joining = upscaled.decoder(PROMPTS[:1], copy.deepcopy(params), SPEC, joining=True)
    joining.step()
    assert not running.can_merge(joining)  # the running decoder has not run its first round
    running.step()
    assert not running.can_merge(fresh) and running.can_merge(joining)
    other_draft = upscaled.decoder(PROMPTS[:1], copy.deepcopy(params), {**SPEC, "k": 2},
                                   joining=True)
    assert not running.can_merge(other_draft)  # before its first tokens
    other_draft.step()
    assert running.can_merge(other_draft)  # k is the running decoder's; the draft is the same
    assert not running.can_merge(upscaled.decoder(PROMPTS[:1], copy.deepcopy(params),
                                                  {**SPEC, "draft": "chat"}, joining=True))
    assert not running.can_merge(upscaled.decoder(PROMPTS[:1], copy.deepcopy(params),
                                                  joining=True))  # lockstep
    with pytest.raises(ValueError, match="decoders of one kind"):
        running.merge(fresh)
    with pytest.raises(GenerationParamsError, match="joining"):
        upscaled.decoder(PROMPTS[:1], params, SPEC, joining="yes")


def test_the_shortest_prompts_join_too(upscaled):
    """One character after the start token: the shortest prompt a composition takes ("" is
    refused as empty)."""
    assert len(upscaled.prompt_ids("large", "b")) == 2
    params = mixed(3, 3)
    decoder = upscaled.decoder(PROMPTS[:1], copy.deepcopy(params[:1]), SPEC)
    decoder.step()
    late = upscaled.decoder(["b", "a"], copy.deepcopy(params[1:]), SPEC, joining=True)
    first_tokens(late)
    decoder.merge(late)
    while not decoder.done:
        decoder.step()
    assert [decoder.completion(i).token_ids for i in range(3)] == [
        c.token_ids for c in alone(upscaled, [PROMPTS[0], "b", "a"], params)]
