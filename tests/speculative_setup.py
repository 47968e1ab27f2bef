"""What the speculative tests share: tiny float64 Llamas composed for up-scaling, prompts, and
helpers that decode and compare."""

from __future__ import annotations

import contextlib

import torch
from tiny_models import llama

from emulate import Composition

PROMPTS = [
    "The quick",
    "Emulated fine-tuning combines a large base model",
    "Où",
    "a",
    "Numbers 0123456789 and punctuation",
    "Ça coûte 5€. The quick brown",
]
UPSCALE = "large + 1.0*(chat - small)"


@contextlib.contextmanager
def single_thread():
    """Tiny models run faster on one thread, and far faster on a machine shared with others."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def upscaled_composition(tokenizer) -> Composition:
    """Float64 tiny Llamas (greedy ties cannot flip between block and one-token forwards)."""
    vocab = len(tokenizer)
    members = {
        "large": llama(vocab, hidden=64, layers=3, seed=1),
        "chat": llama(vocab, seed=3),
        "small": llama(vocab, seed=2),
    }
    return Composition(
        UPSCALE, {name: (m.double(), tokenizer) for name, m in members.items()},
        templates={"chat": "chat"},
    )


def run(composition, prompts, params, speculative=None):
    """Decode to the end; a speculative decoder records the k of each round in `drafted_k`."""
    decoder = composition.decoder(prompts, params, speculative)
    if hasattr(decoder, "_draft"):
        decoder.drafted_k = []
        draft = decoder._draft

        def recording(k, *args):
            decoder.drafted_k.append(k)
            return draft(k, *args)

        decoder._draft = recording
    while not decoder.done:
        decoder.step()
    return [decoder.completion(i) for i in range(len(prompts))], decoder


def assert_fixed_k(decoder, k: int) -> None:
    """Every round drafted k tokens, or fewer only where a row's budget left less room."""
    assert decoder.k == k and decoder.drafted_k[0] == k, decoder.drafted_k
    assert all(used <= k for used in decoder.drafted_k)


def greedy(composition, prompts, n=24, **kwargs):
    return composition.sampling_params(prompts, max_new_tokens=n, temperature=0, **kwargs)


def assert_same(expected, got):
    for a, b in zip(expected, got, strict=True):
        assert (b.token_ids, b.text, b.finish_reason) == (a.token_ids, a.text, a.finish_reason)
