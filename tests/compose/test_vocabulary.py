"""Vocabulary edges and dtypes: tokenizers that differ by added tokens, end tokens past the
shared vocabulary, and models loaded or run in bfloat16 / float16 on CPU."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tiny_models import llama, make_tokenizer, save

from emulate import Composition
from emulate.common.errors import ModelLoadError
from emulate.compose.cached_batch import CachedBatch
from emulate.compose.lean_llama import LeanLlama
from emulate.compose.loading import EosOutsideVocabularyWarning, load_model, load_structure


@pytest.fixture(scope="module")
def tokenizers():
    """The base tokenizer and a chat fine-tune's: the same ids plus two added tokens."""
    base, chat = make_tokenizer(), make_tokenizer(extra_tokens=2)
    assert len(chat) == len(base) + 2
    return base, chat


def test_added_tokens_past_the_shared_vocabulary(tokenizers):
    """The chat model knows two more tokens, its end-of-turn token among them: the composition
    runs over the shared ids (the reference's first len(base) logits of every model), and the
    end token it can never sample is named in a warning, not dropped in silence."""
    base, chat = tokenizers
    end = len(base) + 1  # "<extra_1>"
    members = {"large": (llama(len(base), hidden=64, seed=1), base),
               "chat": (llama(len(chat), seed=3), chat), "small": (llama(len(base), seed=2), base)}
    members["chat"][0].generation_config.eos_token_id = [2, end]
    with pytest.warns(EosOutsideVocabularyWarning) as caught:
        composition = Composition("large + chat - small", members, templates={"chat": "chat"})
    message = str(caught[0].message)
    assert f"'<extra_1>' (id {end})" in message and "'chat'" in message
    assert "Give every model a tokenizer with this token" in message
    assert composition.vocab_size == len(base) and composition.eos_token_ids == {2}

    got = composition.next_token_logprobs(["The quick", "Où est"])
    weights = {"large": 1.0, "chat": 1.0, "small": -1.0}
    for row, prompt in enumerate(["The quick", "Où est"]):
        total = 0
        for term, (model, tokenizer) in members.items():
            if term == "chat":
                messages = [{"role": "user", "content": prompt}]
                ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                    tokenize=True)["input_ids"]
            else:
                ids = tokenizer(prompt)["input_ids"]
            with torch.no_grad():
                logits = copy.deepcopy(model).double()(torch.tensor([ids])).logits[0, -1]
            total = total + weights[term] * torch.log_softmax(logits[: len(base)], -1)
        expected = torch.log_softmax(total, -1)
        assert (got[row].double() - expected).abs().max() < 1e-4
    text = composition.generate(["The quick"], max_new_tokens=6, temperature=0)[0]
    assert "<extra_" not in text


def test_every_end_token_inside_the_vocabulary_warns_nothing(tokenizers, recwarn):
    base, _ = tokenizers
    model = llama(len(base), seed=1)
    model.generation_config.eos_token_id = [2, 4]
    composition = Composition("m", {"m": (model, base)})
    assert composition.eos_token_ids == {2, 4}
    assert not [w for w in recwarn if issubclass(w.category, EosOutsideVocabularyWarning)]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", torch.float64])
def test_loading_in_a_dtype_and_on_a_device(tokenizers, tmp_path, dtype):
    base, _ = tokenizers
    path = save(llama(len(base), seed=1), base, tmp_path / "m")
    loaded = load_model(path, "m", device="cpu", dtype=dtype)
    want = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    assert {p.dtype for p in loaded.model.parameters()} == {want}
    assert {p.device.type for p in loaded.model.parameters()} == {"cpu"}
    composition = Composition("m", {"m": path}, dtype=dtype)
    assert next(composition.loaded["m"].model.parameters()).dtype == want
    pair = load_model((llama(len(base), seed=1), base), "m", device="cpu", dtype=dtype)
    assert {p.dtype for p in pair.model.parameters()} == {want}  # objects are converted too
    with pytest.raises(ModelLoadError, match="unknown dtype 'float8'"):
        load_model(path, "m", dtype="float8")


def test_a_corrupt_weights_file_is_a_load_error(tokenizers, tmp_path):
    base, _ = tokenizers
    path = save(llama(len(base), seed=1), base, tmp_path / "m")
    (Path(path) / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="cannot load model 'm'"):
        load_model(path, "m")
    for load in (load_model, load_structure):  # a folder that is not there: no hub lookup
        with pytest.raises(ModelLoadError, match="no such directory"):
            load(str(tmp_path / "missing"), "m")


@pytest.mark.parametrize(("dtype", "bound"), [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_lean_forward_in_half_precision(tokenizers, dtype, bound):
    """The lean forward's half-precision path (norms in float32, weights in the model's dtype)
    is taken, equals the library's forward, and stays within the dtype's rounding of float64."""
    base, _ = tokenizers
    model = llama(len(base), hidden=64, seed=5)
    with torch.no_grad():  # norms start at ones; make their weights matter
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(model).double()
    half = model.to(dtype)
    lean = LeanLlama.wrap(half)
    assert isinstance(lean, LeanLlama)  # its probe agreed with the library at this dtype
    outputs = []
    for forward in (half, lean, reference):
        batch = CachedBatch(forward, len(base))
        first = batch.prefill([[1, 5, 6, 7, 8], [1, 9]])
        outputs.append((first, batch.extend(torch.tensor([[10, 11], [12, 13]]))))
    (lib_first, lib_next), (lean_first, lean_next), (ref_first, ref_next) = outputs
    assert lean_first.dtype == lean_next.dtype == dtype
    scale = ref_next.abs().max()
    assert (lean_next.double() - lib_next.double()).abs().max() <= bound / 10 * scale
    assert (lean_first.double() - ref_first).abs().max() <= bound * scale
    assert (lean_next.double() - ref_next).abs().max() <= bound * scale
    composition = Composition("m", {"m": (half, base)})
    library = Composition("m", {"m": (half, base)}, lean=False)
    prompts = ["The quick", "Où est la gare?"]
    assert composition.generate(prompts, max_new_tokens=8, temperature=0) == \
        library.generate(prompts, max_new_tokens=8, temperature=0)


def test_copies_of_one_tokenizer_share_a_key_and_others_do_not(tokenizers):
    """Terms whose checkpoints ship copies of one tokenizer render a prompt once (one key); a
    tokenizer with added tokens, or with another chat template, is a tokenizer of its own."""
    base, chat = tokenizers
    templated = make_tokenizer()
    templated.chat_template = "{% for m in messages %}<<{{ m['content'] }}>>{% endfor %}"
    members = {"a": (llama(len(base), seed=1), base), "b": (llama(len(base), seed=2),
                                                           make_tokenizer()),
               "c": (llama(len(chat), seed=3), chat), "d": (llama(len(base), seed=4), templated)}
    composition = Composition("a + b + c - d", members, templates=dict.fromkeys(members, "chat"))
    keys = {t: composition.loaded[t].tokenizer_key for t in members}
    assert base is not members["b"][1] and keys["a"] == keys["b"]
    assert len({keys["a"], keys["c"], keys["d"]}) == 3
    prompt = [{"role": "user", "content": "hi there"}]
    assert composition.prompt_ids("d", prompt) != composition.prompt_ids("a", prompt)
