"""Hand-written references for sampled decoding, sharing no code with the engine.

A 12-token vocabulary and three tiny Llamas with spread-out distributions (so a draft and the
composition disagree often), the composed distribution recomputed from fresh float64 forwards
with hard-coded weights, and the row filters written out in plain Python from their
definitions: temperature divides the log-probs; top-k keeps the k most likely tokens; top-p
keeps the most likely tokens up to and including the one whose cumulative probability reaches
top_p; min-p keeps tokens at least min_p times as likely as the most likely one. Each filter
reads the tempered distribution; the kept tokens are renormalized.
"""

from __future__ import annotations

import copy
import math

import torch
from scipy.stats import chisquare
from tiny_models import llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

WORDS = ["<pad>", "<s>", "</s>"] + [f"w{i}" for i in range(9)]
EOS = 2
WEIGHTS = {"large": 1.0, "chat": 1.0, "small": -1.0}  # large + 1.0*(chat - small)
FORMULA = "large + 1.0*(chat - small)"


def twelve_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )


def twelve_members(dtype=torch.float32) -> dict[str, tuple]:
    """large, chat and small as (model, tokenizer): flat enough that every filter matters."""
    tokenizer = twelve_tokenizer()

    def member(seed, hidden=32):
        model = llama(len(tokenizer), hidden=hidden, seed=seed)
        with torch.no_grad():
            model.get_output_embeddings().weight.mul_(3 / 20)  # undo most of the sharpening
        return model.to(dtype), tokenizer

    return {"large": member(1, 64), "chat": member(2), "small": member(3)}


class Reference:
    """p(next | prompt + generated) of the composition, from uncached float64 forwards."""

    def __init__(self, members: dict[str, tuple], weights=WEIGHTS):
        self.weights = dict(weights)
        self.models = {t: copy.deepcopy(m).double().eval() for t, (m, _) in members.items()}
        self.tokenizer = next(iter(members.values()))[1]
        self._memo: dict[tuple, list[float]] = {}

    def logprobs(self, prompt: str, generated=()) -> list[float]:
        key = (prompt, tuple(generated))
        if key not in self._memo:
            ids = self.tokenizer(prompt)["input_ids"] + list(generated)
            total = 0
            with torch.no_grad():
                for term, weight in self.weights.items():
                    logits = self.models[term](torch.tensor([ids])).logits[0, -1]
                    total = total + weight * torch.log_softmax(logits, -1)
            self._memo[key] = torch.log_softmax(total, -1).tolist()
        return self._memo[key]

    def own(self, term: str, prompt: str, generated=()) -> list[float]:
        """One term's own next-token log-probs."""
        ids = self.tokenizer(prompt)["input_ids"] + list(generated)
        with torch.no_grad():
            return torch.log_softmax(self.models[term](torch.tensor([ids])).logits[0, -1],
                                     -1).tolist()


def filtered(logp: list[float], temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> list[float]:
    """The row's sampling distribution (probabilities) from the composed log-probs."""
    if temperature == 0:  # greedy: all mass on the most likely token
        best = max(range(len(logp)), key=lambda i: logp[i])
        return [1.0 if i == best else 0.0 for i in range(len(logp))]
    scaled = [x / temperature for x in logp]
    top = max(scaled)
    weights = [math.exp(x - top) if x > -math.inf else 0.0 for x in scaled]
    probs = [w / sum(weights) for w in weights]
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    keep = set(order)
    if top_k:
        keep &= set(order[:top_k])
    if top_p < 1:
        nucleus, mass = set(), 0.0
        for i in order:
            nucleus.add(i)
            mass += probs[i]
            if mass >= top_p:
                break
        keep &= nucleus
    if min_p:
        keep &= {i for i in order if probs[i] >= min_p * probs[order[0]]}
    keep = {i for i in keep if probs[i] > 0}
    total = sum(probs[i] for i in keep)
    return [probs[i] / total if i in keep else 0.0 for i in range(len(probs))]


def plausible(logp: list[float], own: list[float], top_p: float) -> list[float]:
    """Conservative decoding: `logp` restricted to the top-p set of a term's own distribution."""
    order = sorted(range(len(own)), key=lambda i: -own[i])
    nucleus, mass = set(), 0.0
    for i in order:
        nucleus.add(i)
        mass += math.exp(own[i])
        if mass >= top_p:
            break
    total = math.log(sum(math.exp(logp[i]) for i in nucleus))
    return [logp[i] - total if i in nucleus else -math.inf for i in range(len(logp))]


def sequence_probs(reference: Reference, prompt: str, length: int, settings: dict) -> dict:
    """{token tuple: probability} of the first `length` tokens (a sequence ends at EOS).
    settings: the row's filters, and optionally plausibility=(term, top_p)."""
    settings = dict(settings)
    term, top_p = settings.pop("plausibility", (None, 1.0))
    out, frontier = {}, {(): 1.0}
    for _ in range(length):
        grown = {}
        for prefix, mass in frontier.items():
            logp = reference.logprobs(prompt, prefix)
            if term is not None:
                logp = plausible(logp, reference.own(term, prompt, prefix), top_p)
            probs = filtered(logp, **settings)
            for token, p in enumerate(probs):
                if p > 0:
                    (out if token == EOS else grown)[prefix + (token,)] = mass * p
        frontier = grown
    out.update(frontier)
    return out


def assert_follows(observed: list[tuple], expected: dict, min_cells: int = 3) -> None:
    """Every observed sequence is possible, and their counts pass a chi-square test (cells
    expected fewer than 5 times are pooled)."""
    counts: dict[tuple, int] = {}
    for seq in observed:
        counts[seq] = counts.get(seq, 0) + 1
    impossible = set(counts) - set(expected)
    assert not impossible, f"sequences the reference never produces: {sorted(impossible)[:5]}"
    n = len(observed)
    big = [cell for cell, p in expected.items() if p * n >= 5]
    rest = [cell for cell in expected if cell not in big]
    got = [counts.get(c, 0) for c in big] + [sum(counts.get(c, 0) for c in rest)]
    means = [expected[c] for c in big] + [sum(expected[c] for c in rest)]
    means = [m * n / sum(means) for m in means]
    if not rest:
        got, means = got[:-1], means[:-1]
    assert len(big) >= min_cells, "too few cells for a meaningful test"
    pvalue = chisquare(got, means).pvalue
    assert pvalue > 1e-3, f"p = {pvalue:.2g}: counts {got} vs expected {[round(m) for m in means]}"


def boundary_top_p(logp: list[float], size: int, margin: float = 1e-4) -> tuple[float, float]:
    """top_p values just below and just above the mass of the `size` most likely tokens: the
    first keeps exactly `size` tokens (the one crossing top_p included), the second one more."""
    probs = sorted((math.exp(x) for x in logp), reverse=True)
    mass = sum(probs[:size])
    assert probs[size] > 10 * margin, "the next token is too unlikely to tell the sets apart"
    return mass - margin, mass + margin


def between_min_p(logp: list[float], keep: int) -> float:
    """A min_p that keeps exactly the `keep` most likely tokens, far from either neighbour."""
    probs = sorted((math.exp(x) for x in logp), reverse=True)
    return math.sqrt(probs[keep - 1] * probs[keep]) / probs[0]
