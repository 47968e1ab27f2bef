"""Drawing a token: the one random step of lockstep and speculative sampling."""

from __future__ import annotations

import torch
from sampling_reference import (
    FORMULA,
    Reference,
    assert_follows,
    between_min_p,
    boundary_top_p,
    filtered,
    sequence_probs,
    twelve_members,
)
from scipy.stats import chisquare
from speculative_setup import single_thread

from emulate import Composition, SamplingParams
from emulate.compose.sampling import draw, filter_logprobs


def test_draw_follows_the_weights_and_never_draws_a_zero():
    weights = torch.tensor([0.0, 3.0, 0.0, 1.0, 6.0, 0.0], dtype=torch.float64)  # unnormalized
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(weights, generator) for _ in range(4000)]),
                            minlength=len(weights))
    assert counts[weights == 0].sum() == 0
    expected = (weights[weights > 0] / weights.sum() * 4000).tolist()
    assert chisquare(counts[weights > 0].tolist(), expected).pvalue > 0.01
    assert draw(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), generator) == 2


# --- every filter against the hand-written reference (sampling_reference.py) ---------------


def test_filters_match_their_definitions_on_random_rows():
    """filter_logprobs on rows with every combination of filters, each row its own settings,
    against the plain-Python definitions (float64, so the sets are exact)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 40, generator=generator, dtype=torch.float64) * 2
    logp = torch.log_softmax(logits, -1)
    settings = [dict(temperature=1.0), dict(temperature=0.5), dict(temperature=2.0, top_k=5),
                dict(top_k=1), dict(top_p=0.3), dict(temperature=0.8, top_p=0.9, min_p=0.02),
                dict(min_p=0.3), dict(temperature=1.5, top_k=12, min_p=0.1)]
    got = filter_logprobs(logp, [SamplingParams(**s) for s in settings]).exp()
    for row, s in enumerate(settings):
        want = torch.tensor(filtered(logp[row].tolist(), **s), dtype=torch.float64)
        assert torch.equal(got[row] > 0, want > 0), s
        assert torch.allclose(got[row], want, atol=1e-12), s


def test_top_p_keeps_the_token_that_crosses_it():
    """Probabilities 0.5, 0.25, 0.125, 0.125: top_p = 0.5 is reached by the first token alone,
    0.6 needs the second (kept), 0.75 exactly the first two, 0.76 a third."""
    logp = torch.tensor([[0.5, 0.25, 0.125, 0.125]], dtype=torch.float64).log()
    for top_p, kept in ((0.4, 1), (0.5, 1), (0.6, 2), (0.75, 2), (0.76, 3), (1.0, 4)):
        got = filter_logprobs(logp, [SamplingParams(top_p=top_p)]).exp()[0]
        assert int((got > 0).sum()) == kept, top_p
        assert torch.allclose(got[:kept], logp.exp()[0, :kept] / logp.exp()[0, :kept].sum())


def test_lockstep_rows_sample_their_own_filtered_distribution():
    """Greedy rows beside rows with temperature, top-k, top-p on either side of a boundary and
    min-p, in one lockstep batch: each row's first two tokens follow the reference."""
    members = twelve_members()
    composition = Composition(FORMULA, members)
    reference = Reference(members)
    prompt = "w1 w2"
    logp = reference.logprobs(prompt)
    below, above = boundary_top_p(logp, 2)
    groups = {
        "greedy": dict(temperature=0), "temperature": dict(temperature=0.6),
        "top_k": dict(top_k=3), "top_p_two": dict(top_p=below), "top_p_three": dict(top_p=above),
        "min_p": dict(min_p=between_min_p(logp, 4)),
        "all": dict(temperature=1.4, top_k=6, min_p=0.05, top_p=0.97),
    }
    n = 600
    params = [SamplingParams(max_new_tokens=2, seed=1000 * g + i, **s)
              for i in range(n) for g, s in enumerate(groups.values())]
    with single_thread():
        decoder = composition.decoder([prompt] * len(params), params)
        while not decoder.done:
            decoder.step()
    tokens = [tuple(decoder.completion(r).token_ids) for r in range(len(params))]
    for g, (name, s) in enumerate(groups.items()):
        observed = tokens[g :: len(groups)]
        expected = sequence_probs(reference, prompt, 2, s)
        if name == "greedy":
            assert set(observed) == set(expected), name
            continue
        assert_follows(observed, expected)
    firsts = {name: {seq[0] for seq in tokens[g :: len(groups)]}
              for g, name in enumerate(groups)}
    assert len(firsts["top_p_two"]) == 2 and len(firsts["top_p_three"]) == 3
    assert len(firsts["top_k"]) == 3 and len(firsts["min_p"]) == 4
