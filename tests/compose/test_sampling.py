"""Drawing a token: the one random step of lockstep and speculative sampling."""

from __future__ import annotations

import torch
from scipy.stats import chisquare

from emulate.compose.sampling import draw


def test_draw_follows_the_weights_and_never_draws_a_zero():
    weights = torch.tensor([0.0, 3.0, 0.0, 1.0, 6.0, 0.0], dtype=torch.float64)  # unnormalized
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(torch.tensor([draw(weights, generator) for _ in range(4000)]),
                            minlength=len(weights))
    assert counts[weights == 0].sum() == 0
    expected = (weights[weights > 0] / weights.sum() * 4000).tolist()
    assert chisquare(counts[weights > 0].tolist(), expected).pvalue > 0.01
    assert draw(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64), generator) == 2
