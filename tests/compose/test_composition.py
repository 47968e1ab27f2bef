"""The engine against the slow, obviously-correct computation, on random tiny models."""

from __future__ import annotations

import functools

import pytest
import torch
from tiny_models import gpt2, llama, make_tokenizer, save
from transformers import AutoModelForCausalLM, AutoTokenizer

from emulate import (
    Composition,
    FormulaError,
    GenerationParamsError,
    PromptTooLongError,
    TemplateError,
    VocabularyMismatchError,
)
from emulate.compose.templates import Template

PROMPTS = [
    "The quick",
    "Emulated fine-tuning combines a large base model",
    "Où",
    "Numbers 0123456789 and punctuation",
    "The lazy dog jumps over the quick brown fox again and again",
    "a",
    "Ça coûte 5€. The quick brown",
    "small model",
    "fine-tuning delta",
]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    return {
        "large": save(llama(vocab, hidden=64, layers=3, seed=1), tokenizer, root / "large"),
        "small": save(llama(vocab, seed=2), tokenizer, root / "small"),
        "chat": save(llama(vocab, seed=3), tokenizer, root / "chat"),
        "g_base": save(gpt2(vocab, seed=4), tokenizer, root / "g_base"),
        "g_chat": save(gpt2(vocab, seed=5), tokenizer, root / "g_chat"),
        "padded": save(llama(vocab, seed=6, padded=16), tokenizer, root / "padded"),
    }


@functools.cache
def _float64(path: str):
    """A checkpoint loaded afresh by the library in float64, with its own tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    return model, AutoTokenizer.from_pretrained(path)


def render(tokenizer, template: str, prompt: str) -> list[int]:
    """The tokenizer's own rendering: its chat template, or the text as given or formatted."""
    if template == "chat":
        messages = [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=True)["input_ids"]
    text = prompt if template == "plain" else template.format(prompt=prompt)
    return tokenizer(text)["input_ids"]


# Hard-coded weights and templates of the compositions below, and where each term's model is.
UPSCALED = ({"large": 1.0, "chat": 1.0, "small": -1.0}, {"chat": "chat"})
GPT2_FORMAT = ({"g_base": 1.5, "g_chat": -0.5}, {"g_chat": "Question: {prompt}\nAnswer:"})


def reference_logprobs(paths: dict, weights: dict, templates: dict, prompt,
                       generated=()) -> torch.Tensor:
    """Each term's full forward in float64, no cache, no padding; weighted sum; renormalized
    over the ids every tokenizer has."""
    vocab = min(len(_float64(paths[t])[1]) for t in weights)
    total = 0
    for term, weight in weights.items():
        model, tokenizer = _float64(paths[term])
        ids = render(tokenizer, templates.get(term, "plain"), prompt) + list(generated)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1, :vocab]
        total = total + weight * torch.log_softmax(logits, -1)
    return torch.log_softmax(total, -1)


def upscaled(family, **kwargs) -> Composition:
    return Composition(
        "large + 1.0*(chat - small)",
        {"large": family["large"], "chat": family["chat"], "small": family["small"]},
        templates={"chat": "chat"},
        **kwargs,
    )


def test_llama_terms_decode_through_the_checked_lean_forward(family):
    """The lean forward falls back to the library's when its probe disagrees: make sure the
    tests below exercise the lean one (and that lean=False and GPT-2 do not)."""
    from emulate.compose.lean_llama import LeanLlama

    for composition, lean in ((upscaled(family), True), (upscaled(family, lean=False), False),
                              (gpt2_with_format_template(family), False)):
        draft = composition.term_names[-1]
        for speculative in (None, {"draft": draft}):  # speculation follows the composition
            decoder = composition.decoder(["a"], composition.sampling_params(["a"]), speculative)
            assert {isinstance(b.model, LeanLlama) for b in decoder.batches.values()} == {lean}


@pytest.mark.parametrize("lean", [True, False])
def test_composed_logprobs_match_float64_reference(family, lean):
    composition = upscaled(family, lean=lean)
    got = composition.next_token_logprobs(PROMPTS)
    assert got.shape == (len(PROMPTS), composition.vocab_size)
    for row, prompt in enumerate(PROMPTS):
        expected = reference_logprobs(family, *UPSCALED, prompt)
        assert (got[row].double() - expected).abs().max() < 1e-4


def gpt2_with_format_template(family) -> Composition:
    return Composition(
        "1.5*g_base - 0.5*g_chat", {"g_base": family["g_base"], "g_chat": family["g_chat"]},
        templates={"g_chat": "Question: {prompt}\nAnswer:"},
    )


@pytest.mark.parametrize(("build", "spec"), [(gpt2_with_format_template, GPT2_FORMAT),
                                             (upscaled, UPSCALED)])
def test_cached_steps_match_float64_reference(family, build, spec):
    """Prefill, then five cached steps on a left-padded batch (lean forward for Llama)."""
    composition = build(family)
    decoder = composition.decoder(PROMPTS[:4], composition.sampling_params(PROMPTS[:4], seed=0))
    for _ in range(5):
        got = decoder.composed_logprobs()
        for pos, row in enumerate(decoder.rows):
            generated = decoder.assemblers[row].token_ids
            expected = reference_logprobs(family, *spec, PROMPTS[row], generated)
            assert (got[pos].double() - expected).abs().max() < 1e-4
        decoder.step()


@pytest.mark.parametrize(("name", "lean"), [("large", True), ("large", False), ("g_base", True)])
def test_one_term_reproduces_hf_greedy(family, name, lean):
    composition = Composition(name, {name: family[name]}, lean=lean)
    model, tokenizer = composition.loaded[name].model, composition.tokenizer
    for prompt in PROMPTS[:5]:
        ids = tokenizer(prompt, return_tensors="pt")
        expected = model.generate(
            **ids, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None
        )[0, ids["input_ids"].shape[1] :]
        got = composition.complete([prompt], max_new_tokens=12, temperature=0)[0].token_ids
        assert got == expected.tolist()[: len(got)]
        assert len(got) == len(expected) or got[-1] in composition.eos_token_ids


def gpt2_disaligned(family) -> Composition:
    return Composition(
        "1.5*g_base - 0.5*g_chat", {"g_base": family["g_base"], "g_chat": family["g_chat"]},
        templates={"g_chat": "chat"},
    )


def upscaled_library_forward(family) -> Composition:
    return upscaled(family, lean=False)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("build", [upscaled, upscaled_library_forward, gpt2_disaligned])
def test_batched_equals_one_at_a_time(family, temperature, build):
    composition = build(family)
    batched = composition.complete(PROMPTS, max_new_tokens=10, temperature=temperature, seed=7)
    for row, prompt in enumerate(PROMPTS):
        single = composition.complete(
            [prompt], max_new_tokens=10, temperature=temperature, seed=7 + row
        )[0]
        assert single.token_ids == batched[row].token_ids, prompt


def test_seed_reproduces_sampling_and_other_seeds_differ(family):
    composition = upscaled(family)
    first = composition.generate(PROMPTS[:3], max_new_tokens=12, seed=11)
    assert composition.generate(PROMPTS[:3], max_new_tokens=12, seed=11) == first
    assert composition.generate(PROMPTS[:3], max_new_tokens=12, seed=12) != first


def test_stream_deltas_concatenate_to_generate(family):
    composition = upscaled(family)
    texts = composition.generate(PROMPTS[:4], max_new_tokens=15, temperature=0)
    pieces = ["" for _ in PROMPTS[:4]]
    finished = {}
    for delta in composition.stream(PROMPTS[:4], max_new_tokens=15, temperature=0):
        assert delta.index not in finished, "nothing follows a prompt's final delta"
        pieces[delta.index] += delta.text
        if delta.finish_reason:
            finished[delta.index] = delta.finish_reason
    assert pieces == texts
    assert set(finished) == {0, 1, 2, 3}


def test_stop_string_and_length(family):
    composition = upscaled(family)
    full = composition.complete(["The quick"], max_new_tokens=12, temperature=0)[0]
    assert full.finish_reason == "length" and len(full.token_ids) == 12
    stop = full.text[3:6]
    cut = composition.complete(["The quick"], max_new_tokens=12, temperature=0, stop=[stop])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]


def test_a_custom_eos_ends_a_row_unless_ignored(family):
    """A generation config naming its own end token (as chat fine-tunes do): greedy decoding
    stops there, leaving its text out; with ignore_eos it runs on to max_new_tokens."""
    models = {t: (AutoModelForCausalLM.from_pretrained(family[t]), _float64(family[t])[1])
              for t in ("large", "chat", "small")}
    plain = Composition("large + 1.0*(chat - small)", models, templates={"chat": "chat"})
    full = plain.complete(PROMPTS[:3], max_new_tokens=12, temperature=0)
    eos = full[0].token_ids[4]
    assert eos not in plain.eos_token_ids
    models["chat"][0].generation_config.eos_token_id = [2, eos]
    custom = Composition("large + 1.0*(chat - small)", models, templates={"chat": "chat"})
    assert custom.eos_token_ids == {2, eos}
    tokenizer = custom.tokenizer
    for speculative in (None, {"draft": "chat", "k": 3, "adaptive": False}):
        stopped = custom.complete(PROMPTS[:3], max_new_tokens=12, temperature=0,
                                  speculative=speculative)
        for before, after in zip(full, stopped, strict=True):
            if eos not in before.token_ids:
                assert after.token_ids == before.token_ids
                continue
            end = before.token_ids.index(eos)
            assert after.token_ids == before.token_ids[: end + 1]
            assert after.finish_reason == "stop"
            assert after.text == tokenizer.decode(before.token_ids[:end])
        ignoring = custom.complete(PROMPTS[:3], max_new_tokens=12, temperature=0,
                                   ignore_eos=True, speculative=speculative)
        for before, after in zip(full, ignoring, strict=True):
            assert (after.token_ids, after.text, after.finish_reason) == (
                before.token_ids, before.text, "length")


def test_finished_rows_leave_the_batch(family):
    composition = upscaled(family)
    prompts = ["The quick", "small model", "Où"]
    params = composition.sampling_params(prompts, temperature=0, max_new_tokens=20)
    params[1].max_new_tokens = 2
    decoder = composition.decoder(prompts, params)
    decoder.step(), decoder.step()
    assert decoder.rows == [0, 2]
    assert all(batch.rows == 2 * len(terms) for batch, terms in
               zip(decoder.batches.values(), decoder.groups.values(), strict=True))
    decoder.cancel(0)
    deltas = decoder.step()
    assert any(d.index == 0 and d.finish_reason == "cancelled" for d in deltas)
    assert decoder.rows == [2]


def test_terms_sharing_a_checkpoint_load_it_once(family):
    composition = Composition(
        "2*base_chat - base", {"base": family["small"], "base_chat": family["small"]},
        templates={"base_chat": "chat"},
    )
    assert len(composition.loaded) == 1
    decoder = composition.decoder(["hi"], composition.sampling_params(["hi"]))
    assert list(decoder.batches) and next(iter(decoder.batches.values())).rows == 2
    paths = {"base": family["small"], "base_chat": family["small"]}
    expected = reference_logprobs(paths, {"base_chat": 2.0, "base": -1.0},
                                  {"base_chat": "chat"}, "hi")
    assert (decoder.composed_logprobs()[0].double() - expected).abs().max() < 1e-4


def test_padded_embedding_rows_are_ignored(family):
    """A checkpoint with 16 embedding rows past its tokenizer: the composition runs over the
    tokenizer's ids, each row a normalized distribution equal to the reference's."""
    composition = Composition("large + padded - small", {k: family[k] for k in
                                                         ("large", "padded", "small")})
    assert composition.vocab_size == len(composition.tokenizer)
    got = composition.next_token_logprobs(PROMPTS[:4])
    assert got.shape == (4, len(composition.tokenizer))
    assert torch.logsumexp(got.double(), -1).abs().max() < 1e-5
    weights = {"large": 1.0, "padded": 1.0, "small": -1.0}
    for row, prompt in enumerate(PROMPTS[:4]):
        expected = reference_logprobs(family, weights, {}, prompt)
        assert (got[row].double() - expected).abs().max() < 1e-4


def test_plausibility_filter_keeps_the_terms_top_p_set(family):
    composition = upscaled(family)
    own = Composition("large", {"large": family["large"]})
    prompts = ["The quick"] * 30
    large_lp = own.next_token_logprobs(["The quick"])[0]
    order = large_lp.argsort(descending=True)
    mass = large_lp.exp()[order].cumsum(0)
    allowed = set(order[: int((mass < 0.5).sum()) + 1].tolist())
    completions = composition.complete(
        prompts, max_new_tokens=1, seed=0, plausibility={"term": "large", "top_p": 0.5}
    )
    assert {c.token_ids[0] for c in completions} <= allowed


def test_weight_and_parameter_overrides(family):
    composition = Composition(
        "large + beta*(chat - small)",
        {"large": family["large"], "chat": family["chat"], "small": family["small"]},
        parameters={"beta": 1.0},
    )
    base = composition.generate(PROMPTS[:3], max_new_tokens=8, temperature=0)
    only_large = composition.generate(
        PROMPTS[:3], max_new_tokens=8, temperature=0, parameters={"beta": 0.0}
    )
    plain = Composition("large", {"large": family["large"]})
    assert only_large == plain.generate(PROMPTS[:3], max_new_tokens=8, temperature=0)
    assert only_large != base
    with pytest.raises(GenerationParamsError, match="unknown term 'nope'"):
        composition.generate(["x"], weights={"nope": 1.0})
    with pytest.raises(GenerationParamsError, match="unknown parameter"):
        composition.generate(["x"], parameters={"gamma": 1.0})


def test_vocabulary_mismatch_names_models_and_ids(family, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel()
    raw.train_from_iterator(["completely different text " * 50],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<x>"]))
    other = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<x>")
    path = save(llama(len(other), seed=9), other, tmp_path / "other")
    with pytest.raises(VocabularyMismatchError, match=r"'large' and 'other'.*first: \d+"):
        Composition("large - other", {"large": family["large"], "other": path})


def test_bad_inputs_raise_clear_errors(family):
    models = {"large": family["large"], "small": family["small"]}
    with pytest.raises(FormulaError, match="unknown term 'smal'"):
        Composition("large - smal", models)
    with pytest.raises(TemplateError, match="name no model"):
        Composition("large", models, templates={"chatty": "chat"})
    with pytest.raises(TemplateError, match="neither 'plain', 'chat'"):
        Composition("large", models, templates={"large": "Q: {question}"})
    composition = Composition("large - 0.5*small", models)
    with pytest.raises(PromptTooLongError, match="context holds 128"):
        composition.generate(["fox " * 200])
    for bad in [dict(temperature=-1), dict(top_p=0), dict(top_p=1.5), dict(top_k=-2),
                dict(max_new_tokens=0), dict(min_p=1.0)]:
        with pytest.raises(GenerationParamsError):
            composition.generate(["x"], **bad)
    with pytest.raises(GenerationParamsError, match="no prompts"):
        composition.generate([])


def test_chat_template_required_for_chat_terms(family, tmp_path):
    tokenizer = make_tokenizer()
    tokenizer.chat_template = None
    path = save(llama(len(tokenizer), seed=1), tokenizer, tmp_path / "nochat")
    composition = Composition("m", {"m": path}, templates={"m": "chat"})
    with pytest.raises(TemplateError, match="has no chat template"):
        composition.generate(["hi"])


def test_model_objects_are_accepted(family):
    composition = upscaled(family)
    objects = {t: (composition.loaded[t].model, composition.tokenizer) for t in composition.loaded}
    again = Composition(composition.formula, objects, templates={"chat": "chat"})
    assert torch.equal(again.next_token_logprobs(PROMPTS[:2]),
                       composition.next_token_logprobs(PROMPTS[:2]))


def test_each_prompt_is_rendered_once_and_read_as_its_template_says(family, monkeypatch):
    """A server's checks, then its decoder, ask each term for a prompt's ids: it is rendered
    once per template and tokenizer (the family's checkpoints ship copies of one tokenizer), to
    the same ids as the tokenizer's own, and no caller shares a list."""
    composition = upscaled(family)
    renders = []
    original = Template.token_ids
    monkeypatch.setattr(Template, "token_ids",
                        lambda self, prompt, tok: renders.append(self.spec) or original(
                            self, prompt, tok))
    chat = [{"role": "user", "content": "hi there"}]
    for _ in range(3):
        for term in ("large", "small", "chat"):
            ids = composition.prompt_ids(term, chat)
            template = "chat" if term == "chat" else "plain"
            tokenizer = _float64(family[term])[1]
            assert ids == render(tokenizer, template, "hi there")
            ids.append(-1)  # a caller's list is its own
    assert composition.loaded["large"].tokenizer is not composition.loaded["small"].tokenizer
    assert sorted(renders) == ["chat", "plain"]
    assert composition.prompt_ids("large", "hi there") == composition.prompt_ids("large", chat)
    assert len(renders) == 3  # a string is another prompt, rendered once more

