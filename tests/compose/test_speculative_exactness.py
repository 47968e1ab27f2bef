"""Speculation's bookkeeping against fresh forwards, and exactness at float32.

After rejections a row's caches hold holes (masked columns that take no position); they must
read exactly like a cache of the row's kept tokens alone. And at the dtype users run, float32,
speculative greedy decoding must still be the lockstep output and a batch must decode each row
as alone.
"""

from __future__ import annotations

import copy

import pytest
import torch
from speculative_setup import (
    PROMPTS,
    UPSCALE,
    assert_fixed_k,
    greedy,
    run,
    upscaled_composition,
)
from tiny_models import llama, make_tokenizer

from emulate import Composition, SamplingParams

HALFWAY = "large + 0.5*(chat - small)"  # a draft that rows accept in different amounts


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


def next_logits(batch, tokens: torch.Tensor) -> torch.Tensor:
    """The logits after feeding `tokens` (rows, 1) to a copy of `batch` (the batch is kept)."""
    probe = copy.copy(batch)
    probe.cache = copy.deepcopy(batch.cache)
    return probe.extend(tokens)[:, -1]


def test_caches_after_rejections_hold_exactly_the_kept_tokens(tokenizer):
    """After every round, each model's cache (holes and all) followed by the row's last token
    gives the logits of a fresh, uncached float64 forward of the prompt and every kept token."""
    composition = upscaled_composition(tokenizer)
    params = [SamplingParams(max_new_tokens=20, temperature=t, seed=i)
              for i, t in enumerate([0, 1.0, 0, 0.8, 1.2, 0])]
    decoder = composition.decoder(PROMPTS, params, {"draft": HALFWAY, "k": 3, "adaptive": False})
    holes = checked = 0
    while not decoder.done:
        decoder.step()
        if decoder.done:
            break
        last = torch.tensor([decoder.assemblers[i].token_ids[-1] for i in decoder.rows])[:, None]
        for key, terms in decoder.groups.items():
            batch = decoder.batches[key]
            got = next_logits(batch, last.repeat(len(terms), 1))
            model = composition.loaded[key].model
            mask = batch.attention_mask
            holes += int(((mask.cumsum(-1) > 0) & (mask == 0)).sum())  # after a real token
            for j, term in enumerate(terms):
                for pos, i in enumerate(decoder.rows):
                    ids = composition.prompt_ids(term, PROMPTS[i])
                    ids = ids + decoder.assemblers[i].token_ids
                    with torch.no_grad():
                        fresh = model(torch.tensor([ids])).logits[0, -1, : composition.vocab_size]
                    row = j * len(decoder.rows) + pos
                    assert torch.allclose(got[row], fresh, atol=1e-9, rtol=0), (term, i)
                    checked += 1
    assert 0 < decoder.accepted < decoder.proposed
    assert holes > 0 and checked > 0  # rejections did leave holes, and they were read


@pytest.fixture(scope="module")
def float32_upscaled(tokenizer):
    vocab = len(tokenizer)
    members = {"large": llama(vocab, hidden=64, layers=3, seed=1), "chat": llama(vocab, seed=3),
               "small": llama(vocab, seed=2)}
    composition = Composition(UPSCALE, {n: (m, tokenizer) for n, m in members.items()},
                              templates={"chat": "chat"})
    reference = Composition(UPSCALE, {n: (copy.deepcopy(m).double(), tokenizer)
                                      for n, m in members.items()}, templates={"chat": "chat"})
    return composition, reference


def assert_same_or_near_tie(reference, prompt, expected, got, gap: float = 1e-4) -> None:
    """Token-for-token equal; float32 arithmetic in different shapes (blocks vs one token,
    padded batches vs one row) rounds differently, so the one allowed difference is a near-tie:
    where the sequences first part, the float64 composed log-probs of the two tokens differ by
    less than `gap`. (On these models and prompts no tie occurs: the sequences are equal.)"""
    if got == expected:
        return
    at = next(i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b)
    logp = reference.next_token_logprobs([prompt])[0] if at == 0 else None
    if logp is None:
        decoder = reference.decoder([prompt], reference.sampling_params([prompt]))
        for token in expected[:at]:
            decoder.accept(0, token)
            decoder._feed(torch.tensor([[token]]))
        logp = decoder.composed_logprobs()[0]
    difference = abs(float(logp[expected[at]] - logp[got[at]]))
    assert difference < gap, f"sequences part at {at} where no near-tie is ({difference:.3g})"


def test_float32_speculative_greedy_is_lockstep(float32_upscaled):
    composition, reference = float32_upscaled
    lockstep, _ = run(composition, PROMPTS, greedy(composition, PROMPTS))
    for draft, k in (("chat", 3), (HALFWAY, 1), (HALFWAY, 4), (UPSCALE, 6)):
        spec = {"draft": draft, "k": k, "adaptive": False}
        got, decoder = run(composition, PROMPTS, greedy(composition, PROMPTS), spec)
        assert_fixed_k(decoder, k)
        for prompt, a, b in zip(PROMPTS, lockstep, got, strict=True):
            assert_same_or_near_tie(reference, prompt, a.token_ids, b.token_ids)
            assert b.finish_reason == a.finish_reason
        if draft == HALFWAY and k > 1:
            assert 0 < decoder.accepted < decoder.proposed


def test_float32_batched_is_single(float32_upscaled):
    """A row decodes as alone, lockstep and speculative; the composed log-probs of a padded
    batch differ from a single row's by float32 rounding only (bounded, not bit-equal)."""
    composition, reference = float32_upscaled
    params = [SamplingParams(max_new_tokens=16, temperature=t, top_k=k, seed=i)
              for i, (t, k) in enumerate([(0, 0), (1.0, 0), (0, 0), (0.8, 20), (0, 0), (1.1, 0)])]
    for speculative in (None, {"draft": HALFWAY, "k": 3, "adaptive": False}):
        batched, _ = run(composition, PROMPTS, copy.deepcopy(params), speculative)
        for i, prompt in enumerate(PROMPTS):
            (single,), _ = run(composition, [prompt], [copy.deepcopy(params[i])], speculative)
            if params[i].greedy:
                assert_same_or_near_tie(reference, prompt, single.token_ids,
                                        batched[i].token_ids)
            else:  # a sampled row: the same draws from the same distribution
                assert single.token_ids == batched[i].token_ids
    together = composition.next_token_logprobs(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        alone = composition.next_token_logprobs([prompt])[0]
        assert (together[i] - alone).abs().max() < 1e-5


@pytest.mark.parametrize("stop", [0.2, 0.35, 0.9])
def test_drafts_that_stop_where_the_draft_is_unsure_keep_greedy_lockstep(stop):
    """Rows whose drafts end where the draft is unsure (each at its own position, some before
    drafting anything) still decode exactly the lockstep tokens, alone and batched."""
    composition = upscaled_composition(make_tokenizer())
    params = greedy(composition, PROMPTS)
    expected, _ = run(composition, PROMPTS, params)
    spec = {"draft": HALFWAY, "k": 4, "adaptive": False, "stop": stop}
    got, decoder = run(composition, PROMPTS, greedy(composition, PROMPTS), spec)
    for a, b in zip(expected, got, strict=True):
        assert (b.token_ids, b.text, b.finish_reason) == (a.token_ids, a.text, a.finish_reason)
    plain, _ = run(composition, PROMPTS, greedy(composition, PROMPTS),
                   {**spec, "stop": 0.0})
    assert sum(len(c.token_ids) for c in got) == sum(len(c.token_ids) for c in plain)
    assert decoder.proposed < decoder.rounds * len(PROMPTS) * 4  # some blocks were cut
    if stop < 0.9:
        assert decoder.proposed > 0
    if stop == 0.9:  # random drafts are unsure almost everywhere: greedy rows lead
        assert decoder.leads > 0


def test_sampled_rows_never_lead_with_their_texts():
    """A lead is a proposal no draft drew; sampled rows keep the draft's own, so their output is
    the same with lookup as without it."""
    composition = upscaled_composition(make_tokenizer())
    sampled = [SamplingParams(max_new_tokens=16, temperature=1.0, seed=s)
               for s in range(len(PROMPTS))]
    spec = {"draft": HALFWAY, "k": 4, "adaptive": False, "stop": 0.9}
    with_lookup, decoder = run(composition, PROMPTS, copy.deepcopy(sampled), spec)
    without, _ = run(composition, PROMPTS, copy.deepcopy(sampled), {**spec, "lookup": False})
    assert decoder.leads == 0
    assert [c.token_ids for c in with_lookup] == [c.token_ids for c in without]
