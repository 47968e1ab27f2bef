import math

import torch

from emulate.compose.combine import compose_logprobs


def test_matches_weighted_log_softmax():
    torch.manual_seed(0)
    a, b = torch.randn(3, 11), torch.randn(3, 11)
    weights = torch.tensor([[1.0, 0.5]] * 3)
    expected = torch.log_softmax(
        torch.log_softmax(a.double(), -1) + 0.5 * torch.log_softmax(b.double(), -1), -1
    )
    assert torch.allclose(compose_logprobs([a, b], weights).double(), expected, atol=1e-6)


def test_raw_logits_give_the_same_distribution_as_log_softmaxes():
    torch.manual_seed(1)
    a, b = torch.randn(2, 7), torch.randn(2, 7)
    weights = torch.tensor([[1.5, -0.5]] * 2)
    shifted = compose_logprobs([a + 3.0, b - 100.0], weights)
    assert torch.allclose(compose_logprobs([a, b], weights), shifted, atol=1e-5)


def test_forbidden_tokens_never_nan_and_never_allowed():
    inf = float("inf")
    a = torch.tensor([[0.0, -inf, 1.0, -inf]])
    b = torch.tensor([[-inf, 2.0, 0.0, -inf]])
    for wa, wb in [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (2.0, -3.0), (-0.5, -0.5), (1.0, 0.0)]:
        out = compose_logprobs([a, b], torch.tensor([[wa, wb]]))
        assert not torch.isnan(out).any(), (wa, wb)
        assert math.isclose(out.exp().sum().item(), 1.0, rel_tol=1e-5)
        assert out[0, 3] == -inf, "a token every term forbids is never allowed"
    # A positive-weight term's zero is a zero of the product.
    out = compose_logprobs([a, b], torch.tensor([[1.0, 1.0]]))
    assert out[0, 0] == -inf and out[0, 1] == -inf and out[0, 2] > -inf
    # A negative-weight term's zero does not blow up the token.
    out = compose_logprobs([a, b], torch.tensor([[1.0, -1.0]]))
    assert torch.isfinite(out[0, [0, 2]]).all() and out[0, 1] == -inf


def test_disjoint_positive_supports_fall_back_to_union():
    inf = float("inf")
    a = torch.tensor([[0.0, -inf, -inf]])
    b = torch.tensor([[-inf, 0.0, -inf]])
    out = compose_logprobs([a, b], torch.tensor([[1.0, 1.0]]))
    assert torch.isfinite(out[0, :2]).all() and out[0, 2] == -inf


def test_per_row_weights():
    torch.manual_seed(2)
    a, b = torch.randn(2, 5), torch.randn(2, 5)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = compose_logprobs([a, b], weights)
    assert torch.allclose(out[0], torch.log_softmax(a[0], -1), atol=1e-6)
    assert torch.allclose(out[1], torch.log_softmax(b[1], -1), atol=1e-6)
