"""What speculative decoding is asked to do, checked before anything decodes.

`speculative=True` or `{"draft": TERM or FORMULA, "k": K, "adaptive": bool, "k_max": N,
"lean": ..., "lookup": True | "own" | False}`. The same checks serve the decoder, the server's
requests (before they join a batch) and its config file (before any model is loaded). The
default draft is the smallest positive-weight term that the largest model does not run: in EFT
up-scaling, the small tuned model. `adapt_k` picks the number of drafts per round from what
earlier rounds measured.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

from emulate.common.errors import GenerationParamsError
from emulate.compose.formula import parse_formula

DEFAULT_K = 4
K_MAX = 16
OPTIONS = ("draft", "k", "adaptive", "k_max", "lean", "lookup")
LOOKUPS = (True, "own", False)


def speculative_options(value) -> dict:
    """`True` or {"draft": NAME or FORMULA, "k": K, "adaptive": bool, "k_max": N} -> kwargs."""
    if value is True:
        return {}
    if isinstance(value, Mapping):
        unknown = set(value) - set(OPTIONS)
        if unknown:
            raise GenerationParamsError(
                f"unknown speculative option(s) {sorted(unknown)}; use {', '.join(OPTIONS)}"
            )
        return {key: v for key, v in value.items() if v is not None}
    raise GenerationParamsError(
        f"speculative must be True or a dict like {{'draft': 'chat_small', 'k': 4}}, got {value!r}"
    )


def check_speculative(composition, value) -> dict | None:
    """The options `value` (None, False, True or a dict) stands for, checked against
    `composition` without decoding anything: a server raises a decoder's errors (unknown
    option, bad k, a draft that is no formula over the terms, no draft at all) before a request
    joins a batch."""
    options = check_speculative_options(value, composition.term_names, composition.parameters)
    if options is not None and not options.get("draft"):
        default_draft(composition)
    return options


def check_speculative_options(value, term_names, parameters) -> dict | None:
    """`check_speculative` for what can be checked without the models (a config file)."""
    if value is None or value is False:
        return None
    options = speculative_options(value)
    check_k(options.get("k", DEFAULT_K), options.get("k_max", K_MAX))
    check_lookup(options.get("lookup", True))
    if options.get("draft"):
        parse_formula(options["draft"], term_names, parameters)
    return options


def check_k(k, k_max) -> None:
    if (not isinstance(k, int) or isinstance(k, bool) or k < 1 or not isinstance(k_max, int)
            or k_max < k):
        raise GenerationParamsError(
            f"speculative k must be an integer in [1, k_max = {k_max}], got {k!r}")


def check_lookup(lookup) -> None:
    if not any(lookup is v or (isinstance(v, str) and lookup == v) for v in LOOKUPS):
        raise GenerationParamsError(
            "speculative lookup must be true (guess the draft's next tokens from its own text "
            f"and this composition's earlier texts), 'own' (its own text only) or false; "
            f"got {lookup!r}")


def default_draft(composition) -> str:
    """The smallest positive-weight term not run by the largest model (the small tuned model)."""
    state = composition_state(composition)
    if "default_draft" not in state:
        state["default_draft"] = _smallest_tuned(composition)
    return state["default_draft"]


def _smallest_tuned(composition) -> str:
    weights = composition.resolve_weights()
    sizes = {
        t: sum(p.numel() for p in composition.loaded[composition.model_key(t)].model.parameters())
        for t in composition.term_names
    }
    largest = max(sizes.values())
    candidates = [t for t in composition.term_names if weights[t] > 0 and sizes[t] < largest]
    if not candidates:
        raise GenerationParamsError(
            "speculative decoding needs a draft smaller than the largest model, and no "
            "positive-weight term is; name one with speculative={'draft': TERM}"
        )
    return min(candidates, key=lambda t: (sizes[t], -weights[t]))


_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def composition_state(composition) -> dict:
    """Per-composition memory: its default draft, per (draft, lookup) what adaptive k learned,
    and the history of texts the drafts' lookup guesses from."""
    return _states.setdefault(composition, {})


def adapt_k(learned: dict, k: int, k_max: int, rows: int, judged: int, passed: int,
            costs: tuple[float, float, float] | None) -> int:
    """The k with the most expected tokens per second, after a round that drafted k tokens for
    `rows` rows, in which `passed` of `judged` positions were accepted.

    With per-position acceptance a, a round of k drafts yields (1 - a^(k+1)) / (1 - a)
    tokens per row. A round's time is measured for each k tried with this many rows, and
    predicted for the others as (k + a^k) drafted tokens plus a fixed part (verifying
    forwards, bookkeeping). All are running averages in `learned` that favour recent rounds;
    decoders of one composition share them. `costs` (seconds per drafted token, the rest of
    the round, the whole round) is None for a round whose time says nothing about k.
    """
    learned["judged"] = 0.8 * learned["judged"] + judged
    learned["passed"] = 0.8 * learned["passed"] + passed
    a = min(learned["passed"] / learned["judged"], 0.99)
    seen = learned.setdefault("seen", {})  # (rows, k) -> (round seconds, rounds seen)
    if costs is not None:
        draft_cost, fixed_cost, seconds = costs
        old = learned["costs"] or (draft_cost, fixed_cost)
        learned["costs"] = tuple(0.8 * o + 0.2 * n
                                 for o, n in zip(old, (draft_cost, fixed_cost), strict=True))
        spent, count = seen.get((rows, k), (seconds, 0))
        seen[rows, k] = (0.7 * spent + 0.3 * seconds, count + 1)
    if learned["costs"] is None:
        return k  # nothing measured yet: keep k
    draft, fixed = learned["costs"]

    def rate(k: int) -> float:
        spent, count = seen.get((rows, k), (0.0, 0))
        cost = spent if count >= 2 else (k + a**k) * draft + fixed
        return (1 - a ** (k + 1)) / (1 - a) / cost

    learned["k"] = max(range(1, k_max + 1), key=rate)
    return learned["k"]
