"""Choosing the next token from a composed distribution: temperature, top-k, top-p, min-p.

Each row of a batch carries its own parameters and its own random generator, so a request's
output depends only on its own seed, not on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from emulate.common.errors import GenerationParamsError
from emulate.compose import checks


@dataclass
class Plausibility:
    """Conservative decoding: keep only tokens in one term's own top-p set (and min-p ratio).

    The EFT paper restricts the composed distribution to tokens the large base model finds
    plausible, which keeps the small models' delta from promoting nonsense.
    """

    term: str
    top_p: float = 0.9
    min_p: float = 0.0

    def __post_init__(self):
        checks.name(self.term, "plausibility term")
        self.top_p = checks.real(self.top_p, "plausibility top_p", 0.0, 1.0, low_open=True)
        self.min_p = checks.real(self.min_p, "plausibility min_p", 0.0, 1.0, high_open=True)


def plausibility_filter(value) -> Plausibility | None:
    """None, a Plausibility, a term name ("large" or "large:0.9") or {term, top_p, min_p}."""
    if value is None or isinstance(value, Plausibility):
        return value
    if isinstance(value, str):
        term, _, top_p = value.partition(":")
        if not top_p:
            return Plausibility(term)
        try:
            number = float(top_p)
        except ValueError:
            raise GenerationParamsError(
                f"plausibility must be 'TERM' or 'TERM:TOP_P', got {value!r}", "plausibility"
            ) from None
        return Plausibility(term, number)
    if isinstance(value, Mapping):
        checks.keywords(value, ("term", "top_p", "min_p"), "plausibility")
        if "term" not in value:
            raise GenerationParamsError("plausibility needs a 'term'", "plausibility")
        return Plausibility(**value)
    raise GenerationParamsError(
        "plausibility must be a term name, 'TERM:TOP_P', {'term': ..., 'top_p': ...} or a "
        f"Plausibility, got {type(value).__name__} {value!r:.40}", "plausibility")


@dataclass
class SamplingParams:
    """Per-prompt decoding settings. temperature 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    weights: dict[str, float] | None = None  # per-request override of formula weights
    parameters: dict[str, float] | None = None  # per-request values of formula parameters
    plausibility: Plausibility | None = None
    ignore_eos: bool = False  # keep going past EOS (benchmarks measuring a fixed length)

    def __post_init__(self):
        """Every field checked by the shared checks (see checks.py): one message per bad value,
        whoever passed it (Python API, command line, server, lm-eval)."""
        self.max_new_tokens = checks.integer(self.max_new_tokens, "max_new_tokens", 1)
        self.temperature = checks.real(self.temperature, "temperature", 0.0,
                                       error=GenerationParamsError)
        self.top_p = checks.real(self.top_p, "top_p", 0.0, 1.0, low_open=True)
        self.top_k = checks.integer(self.top_k, "top_k", 0, what=" (0 = off)")
        self.min_p = checks.real(self.min_p, "min_p", 0.0, 1.0, high_open=True)
        self.seed = checks.seed(self.seed)
        self.stop = checks.stop_strings(self.stop)
        self.weights = checks.numbers_by_name(self.weights, "weights") or None
        self.parameters = checks.numbers_by_name(self.parameters, "parameters") or None
        self.plausibility = plausibility_filter(self.plausibility)
        self.ignore_eos = checks.flag(self.ignore_eos, "ignore_eos")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def generator(self) -> torch.Generator:
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(self.seed))
        return generator


def top_p_mask(logprobs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """True for tokens outside the smallest set whose probability reaches top_p (per row)."""
    sorted_lp, order = logprobs.sort(dim=-1, descending=True)
    cumulative = sorted_lp.exp().cumsum(dim=-1)
    outside_sorted = (cumulative - sorted_lp.exp()) >= top_p[:, None]
    return torch.zeros_like(outside_sorted).scatter(-1, order, outside_sorted)


def min_p_mask(logprobs: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """True for tokens less likely than min_p times the most likely token (per row)."""
    threshold = logprobs.amax(dim=-1, keepdim=True) + torch.log(min_p[:, None].clamp(min=1e-30))
    return (logprobs < threshold) & (min_p[:, None] > 0)


def filter_logprobs(logprobs: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """Apply each row's temperature and top-k/top-p/min-p filters; return renormalized log-probs.

    Greedy rows are returned unchanged (their argmax does not depend on the filters).
    """
    temperature = torch.tensor([p.temperature or 1.0 for p in params], dtype=logprobs.dtype)
    scaled = torch.log_softmax(logprobs / temperature[:, None].to(logprobs.device), dim=-1)
    blocked = torch.zeros_like(scaled, dtype=torch.bool)
    top_k = [p.top_k for p in params]
    if any(top_k):
        kth = scaled.sort(dim=-1, descending=True).values
        for row, k in enumerate(top_k):
            if 0 < k < scaled.shape[-1]:
                blocked[row] |= scaled[row] < kth[row, k - 1]
    top_p = torch.tensor([p.top_p for p in params], dtype=scaled.dtype, device=scaled.device)
    if (top_p < 1).any():
        blocked |= top_p_mask(scaled, top_p)
    min_p = torch.tensor([p.min_p for p in params], dtype=scaled.dtype, device=scaled.device)
    if (min_p > 0).any():
        blocked |= min_p_mask(scaled, min_p)
    return torch.log_softmax(scaled.masked_fill(blocked, float("-inf")), dim=-1)


def choose_tokens(
    logprobs: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]
) -> torch.Tensor:
    """One token per row: argmax for greedy rows, a draw from the filtered distribution else."""
    tokens = logprobs.argmax(dim=-1)
    sampled_rows = [row for row, p in enumerate(params) if not p.greedy]
    if sampled_rows:
        filtered = filter_logprobs(logprobs[sampled_rows], [params[r] for r in sampled_rows])
        probs = filtered.exp().cpu().double()
        for i, row in enumerate(sampled_rows):
            tokens[row] = draw(probs[i], generators[row])
    return tokens


def draw(weights: torch.Tensor, generator: torch.Generator) -> int:
    """A token drawn with probability proportional to `weights` (cpu, float64), by inverting
    the cumulative distribution at one uniform number: a token of weight 0 is never drawn.
    (Several times faster than torch.multinomial on one row.)"""
    cdf = weights.cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64) * cdf[-1]
    return min(int(torch.searchsorted(cdf, u, right=True)), len(weights) - 1)
