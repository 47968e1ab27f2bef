"""Speculative decoding of compositions: exactly the lockstep decoder's output or distribution."""

from __future__ import annotations

import collections
import copy

import pytest
import torch
from sampling_reference import (
    FORMULA,
    Reference,
    assert_follows,
    between_min_p,
    boundary_top_p,
    sequence_probs,
    twelve_members,
)
from speculative_setup import (
    PROMPTS,
    UPSCALE,
    assert_fixed_k,
    assert_same,
    greedy,
    run,
    upscaled_composition,
)
from tiny_models import gpt2, llama, make_tokenizer
from typer.testing import CliRunner

from emulate import Composition, FormulaError, GenerationParamsError, Plausibility, SamplingParams
from emulate.compose.speculative import SpeculativeDecoder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def upscaled(tokenizer):
    return upscaled_composition(tokenizer)


# The default draft (chat) rarely agrees with random models; "large" sometimes; a half-way
# formula often (rows accept different numbers of tokens); the formula itself always.
DRAFTS = ["chat", "large", "large + 0.5*(chat - small)", UPSCALE]


@pytest.fixture(scope="module")
def lockstep(upscaled):
    return run(upscaled, PROMPTS, greedy(upscaled, PROMPTS))[0]


@pytest.mark.parametrize(
    ("draft", "k", "lean"),
    [(DRAFTS[0], 3, True), (DRAFTS[1], 1, True), (DRAFTS[2], 1, True), (DRAFTS[2], 3, True),
     (DRAFTS[2], 6, True), (DRAFTS[3], 4, True), (DRAFTS[2], 3, False), (DRAFTS[2], 3, "draft")],
)
def test_greedy_speculative_is_lockstep_token_for_token(upscaled, lockstep, draft, k, lean):
    expected = lockstep
    spec = {"draft": draft, "k": k, "lean": lean, "adaptive": False}
    got, decoder = run(upscaled, PROMPTS, greedy(upscaled, PROMPTS), spec)
    assert_same(expected, got)
    assert_fixed_k(decoder, k)
    assert decoder.proposed > 0
    if draft == UPSCALE:
        assert decoder.accepted == decoder.proposed
    if draft == "large + 0.5*(chat - small)" and k > 1:
        assert 0 < decoder.accepted < decoder.proposed


def test_greedy_fixed_k_plausibility_stop_strings(upscaled):
    params = greedy(upscaled, PROMPTS, plausibility=Plausibility("large", 0.8))
    expected, _ = run(upscaled, PROMPTS, params)
    stop = expected[1].text[5:8]  # a stop string met inside an accepted block
    kwargs = {"plausibility": Plausibility("large", 0.8), "stop": [stop]}
    expected, _ = run(upscaled, PROMPTS, greedy(upscaled, PROMPTS, **kwargs))
    assert any(c.finish_reason == "stop" for c in expected)
    spec = {"draft": "large + 0.5*(chat - small)", "k": 4, "adaptive": False}
    got, decoder = run(upscaled, PROMPTS, greedy(upscaled, PROMPTS, **kwargs), spec)
    assert_same(expected, got)
    assert_fixed_k(decoder, 4)


def test_eos_inside_an_accepted_block_ends_the_row(upscaled, lockstep):
    expected = lockstep
    # Declare a token the rows produce mid-completion an end-of-sequence token.
    eos = collections.Counter(t for c in expected for t in c.token_ids[3:10]).most_common(1)[0][0]
    composition = copy.copy(upscaled)
    composition.eos_token_ids = upscaled.eos_token_ids | {eos}
    expected, _ = run(composition, PROMPTS, greedy(composition, PROMPTS))
    assert any(c.finish_reason == "stop" and c.token_ids[-1] == eos for c in expected)
    got, decoder = run(composition, PROMPTS, greedy(composition, PROMPTS),
                       {"draft": UPSCALE, "k": 5, "adaptive": False})
    assert_same(expected, got)
    assert_fixed_k(decoder, 5)
    # Drafting stops at the end: the last round drafts up to the end token, no further.
    row = next(i for i, c in enumerate(expected) if c.finish_reason == "stop")
    spec = {"draft": UPSCALE, "k": 7, "adaptive": False}
    (single,), decoder = run(composition, PROMPTS[row : row + 1],
                             greedy(composition, PROMPTS[row : row + 1]), spec)
    assert single.token_ids == expected[row].token_ids
    assert_fixed_k(decoder, 7)
    bonus_tokens = decoder.rounds - 1  # every round but the last ends with one
    assert decoder.proposed == decoder.accepted == len(single.token_ids) - bonus_tokens


def test_lean_llama_matches_the_library_forward(tokenizer):
    from emulate.compose.cached_batch import CachedBatch
    from emulate.compose.lean_llama import LeanLlama

    model = llama(len(tokenizer), hidden=64, seed=5).double()
    assert isinstance(LeanLlama.wrap(model), LeanLlama)
    assert not isinstance(LeanLlama.wrap(gpt2(len(tokenizer)).double()), LeanLlama)
    outs = []
    for forward in (model, LeanLlama.wrap(model)):
        batch = CachedBatch(forward, len(tokenizer))
        prefill = batch.prefill([[1, 5, 6, 7, 8], [1, 9]])
        first = batch.extend(torch.tensor([[10, 11, 12], [13, 14, 15]]))
        batch.keep_first(3, torch.tensor([1, 3]))  # row 0 keeps one: two holes
        second = batch.extend(torch.tensor([[16], [17]]))
        outs.append((prefill, first, second, batch.next_position))
    for got, expected in zip(outs[1], outs[0], strict=True):
        assert torch.allclose(got, expected, atol=1e-9, rtol=0)
    assert outs[0][3].tolist() == [7, 6]


def test_gpt2_greedy_up_to_the_context_limit(tokenizer):
    vocab = len(tokenizer)
    composition = Composition(
        "1.5*g_base - 0.5*g_chat",
        {"g_base": (gpt2(vocab, seed=4).double(), tokenizer),
         "g_chat": (gpt2(vocab, seed=5).double(), tokenizer)},
    )
    prompts = ["The quick", "Où est la gare? " * 7, "a"]  # the long one nears 128 positions
    params = lambda: greedy(composition, prompts, n=60)  # noqa: E731
    expected, _ = run(composition, prompts, params())
    assert len(expected[1].token_ids) < 60  # capped by the context
    for draft in ("g_base", "1.4*g_base - 0.4*g_chat"):
        got, decoder = run(composition, prompts, params(),
                           {"draft": draft, "k": 4, "adaptive": False})
        assert_same(expected, got)
        assert_fixed_k(decoder, 4)
    assert decoder.accepted > 0
    with pytest.raises(GenerationParamsError, match="smaller"):  # no term is smaller
        composition.generate(prompts, speculative=True)


def test_batched_equals_single_row(upscaled):
    """Greedy and sampled rows: a row's output depends on its own seed only, not on k or batch."""
    spec = {"draft": "large + 0.5*(chat - small)", "k": 3, "adaptive": False}
    mixed = [
        SamplingParams(max_new_tokens=20, temperature=0),
        SamplingParams(max_new_tokens=20, temperature=1.0, seed=7),
        SamplingParams(max_new_tokens=12, temperature=0.8, top_k=20, seed=8),
        SamplingParams(max_new_tokens=20, temperature=0, top_p=0.5),
        SamplingParams(max_new_tokens=16, temperature=1.2, top_p=0.9, min_p=0.05, seed=9),
        SamplingParams(max_new_tokens=20, temperature=0),
    ]
    batched, _ = run(upscaled, PROMPTS, copy.deepcopy(mixed), spec)
    for i, prompt in enumerate(PROMPTS):
        single, _ = run(upscaled, [prompt], [copy.deepcopy(mixed[i])], spec)
        assert single[0].token_ids == batched[i].token_ids
        other_k, decoder = run(upscaled, [prompt], [copy.deepcopy(mixed[i])], {**spec, "k": 1})
        assert other_k[0].token_ids == batched[i].token_ids
        assert_fixed_k(decoder, 1)
    lockstep, _ = run(upscaled, PROMPTS, copy.deepcopy(mixed))
    for i in (0, 3, 5):
        assert lockstep[i].token_ids == batched[i].token_ids


def test_api_and_stream(upscaled):
    kwargs = {"max_new_tokens": 10, "temperature": 0}
    expected = upscaled.generate(PROMPTS[:3], **kwargs)
    assert upscaled.generate(PROMPTS[:3], speculative=True, **kwargs) == expected
    streamed = [""] * 3
    finished = set()
    for delta in upscaled.stream(PROMPTS[:3], speculative={"k": 2, "adaptive": False},
                                 **kwargs):
        streamed[delta.index] += delta.text
        if delta.finish_reason:
            finished.add(delta.index)
    assert streamed == expected and finished == {0, 1, 2}
    decoder = upscaled.decoder(PROMPTS[:1], upscaled.sampling_params(PROMPTS[:1]), True)
    assert isinstance(decoder, SpeculativeDecoder) and decoder.draft == "chat"
    with pytest.raises(FormulaError):
        upscaled.generate(PROMPTS[:1], speculative={"draft": "nobody"})
    with pytest.raises(GenerationParamsError):
        upscaled.generate(PROMPTS[:1], speculative={"kk": 3})
    with pytest.raises(GenerationParamsError):
        upscaled.generate(PROMPTS[:1], speculative={"k": 0})


def test_cancel_mid_generation(upscaled, lockstep):
    decoder = upscaled.decoder(PROMPTS, greedy(upscaled, PROMPTS), {"draft": UPSCALE})
    decoder.step()
    decoder.cancel(2)
    deltas = decoder.step()
    assert any(d.index == 2 and d.finish_reason == "cancelled" for d in deltas)
    while not decoder.done:
        decoder.step()
    for i in (0, 1, 3, 4, 5):
        assert decoder.completion(i).token_ids == lockstep[i].token_ids
    assert decoder.completion(2).finish_reason == "cancelled"


def test_verifying_models_read_the_prompt_with_the_first_block(upscaled, lockstep,
                                                              monkeypatch):
    """Only the draft model prefills up front; the others read the prompt and the first block
    in one forward. Output, tiny budgets, early cancels and the distribution are unchanged."""
    from emulate.compose.cached_batch import CachedBatch

    calls = []

    def spying(name):
        original = getattr(CachedBatch, name)

        def spy(self, *args, **kwargs):
            calls.append((name, self.model))
            return original(self, *args, **kwargs)
        return spy

    for name in ("prefill", "extend"):
        monkeypatch.setattr(CachedBatch, name, spying(name))
    spec = {"draft": "chat", "k": 3, "adaptive": False}
    decoder = upscaled.decoder(PROMPTS, greedy(upscaled, PROMPTS), spec)
    large = decoder.batches["large"].model
    assert [name for name, model in calls if model is large] == []
    decoder.step()
    assert [name for name, model in calls if model is large] == ["prefill"]
    while not decoder.done:
        decoder.step()
    assert_same(lockstep, [decoder.completion(i) for i in range(len(PROMPTS))])

    for n in (1, 2):  # one token: no drafts, the block is empty
        expected, _ = run(upscaled, PROMPTS, greedy(upscaled, PROMPTS, n=n))
        got, _ = run(upscaled, PROMPTS, greedy(upscaled, PROMPTS, n=n), spec)
        assert_same(expected, got)
    decoder = upscaled.decoder(PROMPTS, greedy(upscaled, PROMPTS), spec)
    decoder.cancel(1)
    decoder.cancel(4)
    while not decoder.done:
        decoder.step()
    for i in (0, 2, 3, 5):
        assert decoder.completion(i).token_ids == lockstep[i].token_ids
    assert decoder.completion(4).finish_reason == "cancelled"
    params = greedy(upscaled, PROMPTS)
    torch.testing.assert_close(upscaled.decoder(PROMPTS, params, spec).composed_logprobs(),
                               upscaled.decoder(PROMPTS, params).composed_logprobs())


# --- the sampled distribution --------------------------------------------------------------


@pytest.mark.parametrize(("k", "stop"), [(1, 0.0), (2, 0.0), (2, 0.12)])
def test_sampled_speculative_follows_the_composition(k, stop):
    """Rows with their own filters (and greedy rows) in one speculative batch with a fixed k:
    the first k + 1 tokens (k judged drafts, then the bonus token, or a rejection's residual
    draw and later rounds) follow the hand-written reference of the composition."""
    members = twelve_members()
    composition = Composition(FORMULA, members)
    reference = Reference(members)
    prompt = "w1 w2"
    logp = reference.logprobs(prompt)
    groups = {
        "greedy": dict(temperature=0), "temperature": dict(temperature=1.0),
        "top_k": dict(temperature=0.7, top_k=8), "top_p": dict(top_p=boundary_top_p(logp, 3)[0]),
        "min_p": dict(min_p=between_min_p(logp, 5)),
        "plausibility": dict(temperature=0.9, plausibility=("large", 0.9)),
    }
    n = 500
    params = []
    for i in range(n):
        for g, settings in enumerate(groups.values()):
            settings = dict(settings)
            if "plausibility" in settings:
                settings["plausibility"] = Plausibility(*settings["plausibility"])
            params.append(SamplingParams(max_new_tokens=k + 1, seed=1000 * g + i, **settings))
    spec = {"k": k, "adaptive": False, "stop": stop}  # stop: some rows' drafts end early
    completions, decoder = run(composition, [prompt] * len(params), params, spec)
    assert decoder.k == k and decoder.draft == "chat"
    assert 0 < decoder.accepted < decoder.proposed  # drafts both accepted and rejected
    for g, (name, settings) in enumerate(groups.items()):
        observed = [tuple(c.token_ids) for c in completions[g :: len(groups)]]
        expected = sequence_probs(reference, prompt, k + 1, settings)
        if name == "greedy":
            assert set(observed) == set(expected)
        else:
            assert_follows(observed, expected)


# --- the toy family and the CLI --------------------------------------------------------------


def test_greedy_speculative_on_the_micro_world(micro_world):
    world_dir = micro_world
    from emulate.world import load_world
    from emulate.world.corpus import eval_questions
    from emulate.world.evaluate import make_composition

    info = load_world(world_dir)
    composition = make_composition("large_base + small_helpful - small_base", world_dir)
    questions = eval_questions(info.world, "large_only") + eval_questions(info.world, "small_known")
    prompts = [q.text for q in questions[::7][:12]]
    expected, _ = run(composition, prompts, greedy(composition, prompts, n=40, stop=["User:"]))
    for k in (2, 5):
        got, decoder = run(composition, prompts, greedy(composition, prompts, n=40,
                                                         stop=["User:"]),
                           {"k": k, "adaptive": False})
        assert_same(expected, got)
        assert_fixed_k(decoder, k)
        assert decoder.draft == "small_helpful"
        assert decoder.acceptance_rate > 0.2
    single, _ = run(composition, prompts[:1], greedy(composition, prompts[:1], n=40,
                                                          stop=["User:"]), True)
    assert_same(expected[:1], single)


def test_cli_speculative(tmp_path, tokenizer):
    from tiny_models import save

    from emulate.cli import app

    paths = {
        name: save(llama(len(tokenizer), hidden=hidden, seed=seed), tokenizer, tmp_path / name)
        for seed, (name, hidden) in enumerate([("large", 64), ("chat", 32), ("small", 32)])
    }
    args = [
        "generate", "--formula", UPSCALE, "--temperature", "0", "--max-new-tokens", "8",
        *[a for name, p in paths.items() for a in ("--model", f"{name}={p}")],
        "--template", "chat=chat", "The quick", "Où",
    ]
    runner = CliRunner()
    plain = runner.invoke(app, args)
    assert plain.exit_code == 0, plain.output
    for extra in (["--speculative"], ["--speculative", "--draft", "large", "--k", "3"]):
        result = runner.invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        assert result.stdout == plain.stdout
