"""What speculative decoding is asked to do, checked before anything decodes.

`speculative=True` or `{"draft": TERM or FORMULA, "k": K, "adaptive": bool, "k_max": N,
"lean": ..., "lookup": True | "own" | False, "stop": P}`. The same checks serve the decoder,
the server's requests (before they join a batch) and its config file (before any model is
loaded). The default draft is the smallest positive-weight term that the largest model does
not run: in EFT up-scaling, the small tuned model. A k given is at least 1; with `adaptive` (the
default) it is only where rounds start: adaptive_k.py picks the number of drafts per round from
what earlier rounds measured, 0 (a lockstep step) where drafting does not pay at that many rows.
A row's block ends where the draft puts less than `stop` on its likeliest token (0: never):
where it meets a fact it never read, a draft is unsure, and drafting on would be wasted.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping

from emulate.common.errors import GenerationParamsError
from emulate.compose.formula import parse_formula

DEFAULT_K = 4
K_MAX = 16
# Measured on the toy family's answers about people only the large base read (seed 0): of the
# small draft's tokens the composition rejects, 0.79 have top probability below 0.7 and 0.90
# below 0.9; of those it accepts, 0.014 and 0.021.
DEFAULT_STOP = 0.0  # off unless asked: random drafts (the tests' tiny models) are never sure
OPTIONS = ("draft", "k", "adaptive", "k_max", "lean", "lookup", "stop")
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
    check_stop(options.get("stop", DEFAULT_STOP))
    if options.get("draft"):
        parse_formula(options["draft"], term_names, parameters)
    return options


def check_k(k, k_max) -> None:
    if (not isinstance(k, int) or isinstance(k, bool) or k < 1 or not isinstance(k_max, int)
            or k_max < k):
        raise GenerationParamsError(
            f"speculative k must be an integer in [1, k_max = {k_max}], got {k!r}")


def check_stop(stop) -> None:
    if (isinstance(stop, bool) or not isinstance(stop, (int, float))
            or not 0 <= stop < 1):
        raise GenerationParamsError(
            "speculative stop must be a number in [0, 1): a row's drafts end where the draft's "
            f"likeliest token has a lower probability (0: never); got {stop!r}")


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
    """Per-composition memory: its default draft, per (draft, lookup) what adaptive k learned
    (an `AdaptiveK`), and the history of texts the drafts' lookup guesses from."""
    return _states.setdefault(composition, {})
