"""What callers pass, checked in one place.

The Python API, the command line, the server and the lm-eval adapter all reach the engine
through these checks, so a bad value gets the same answer everywhere: an `ArgumentError` (or
`GenerationParamsError` for decoding settings) whose message starts with the argument's name and
says what to pass instead. Types are checked strictly: a string is not a number, a bool is not
an integer, a bare string is not a list of prompts.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from collections.abc import Mapping

from emulate.common.errors import ArgumentError, GenerationParamsError

# Weights, parameters (beta, alpha, lambda) and temperatures beyond this are refused: a log-prob
# scaled by 1e30 is rounding noise in float32 (and inf or nan a little further), never a choice.
MAX_MAGNITUDE = 1000.0
ROLES = ("system", "user", "assistant")
SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed accepts


def real(value, argument: str, low: float | None = None, high: float | None = None,
         low_open: bool = False, high_open: bool = False, error=GenerationParamsError) -> float:
    """A finite real number within [low, high] (bounds open when asked) and ±MAX_MAGNITUDE."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{argument} must be a number, got {_shown(value)}", argument)
    value = float(value)
    if not math.isfinite(value):
        raise error(f"{argument} must be a finite number, got {value!r}", argument)
    if abs(value) > MAX_MAGNITUDE:
        raise error(f"{argument} is {value:g}; numbers beyond ±{MAX_MAGNITUDE:g} are refused "
                    "(log-probs scaled that far are float rounding, not a distribution)", argument)
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if high_open else "]")
        where = f"in {lo}, {hi}" if low is not None and high is not None else (
            f"{'>' if low_open else '>='} {low:g}" if low is not None
            else f"{'<' if high_open else '<='} {high:g}")
        raise error(f"{argument} must be {where}, got {value:g}", argument)
    return value


def integer(value, argument: str, minimum: int | None = None, error=GenerationParamsError,
            what: str = "") -> int:
    """An integer (not a bool, not a float, not a string) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{argument} must be an integer{what}, got {_shown(value)}", argument)
    value = int(value)
    if minimum is not None and value < minimum:
        raise error(f"{argument} must be an integer >= {minimum}{what}, got {value}", argument)
    return value


def seed(value, argument: str = "seed") -> int | None:
    """None (a fresh random seed) or an integer torch can seed a generator with."""
    if value is None:
        return None
    value = integer(value, argument, what=" or None")
    if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
        raise GenerationParamsError(
            f"{argument} must be in [-2**63, 2**64), got {value}", argument)
    return value


def stop_strings(value, argument: str = "stop") -> list[str]:
    """None, one stop string, or a list of non-empty stop strings -> a list."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise GenerationParamsError(
            f"{argument} must be a string or a list of strings, got {_shown(value)}", argument)
    for i, s in enumerate(value):
        if not isinstance(s, str) or not s:
            raise GenerationParamsError(
                f"{argument}[{i}] must be a non-empty string, got {_shown(s)}", f"{argument}[{i}]")
    return list(value)


def flag(value, argument: str) -> bool:
    if not isinstance(value, bool):
        raise GenerationParamsError(f"{argument} must be True or False, got {_shown(value)}",
                                    argument)
    return value


def numbers_by_name(value, argument: str, error=GenerationParamsError) -> dict[str, float]:
    """A mapping name -> finite number (weights, parameters); None is empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise error(f"{argument} must be a mapping name -> number, e.g. {{'beta': 1.5}}, "
                    f"got {_shown(value)}", argument)
    out = {}
    for name, number in value.items():
        if not isinstance(name, str) or not name:
            raise error(f"{argument} keys must be names (strings), got {_shown(name)}", argument)
        out[name] = real(number, f"{argument}[{name!r}]", error=error)
    return out


def strings_by_name(value, argument: str, what: str) -> dict[str, str]:
    """A mapping name -> string (templates); None is empty."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ArgumentError(f"{argument} must be a mapping name -> {what}, got {_shown(value)}",
                            argument)
    for name, text in value.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise ArgumentError(
                f"{argument}[{name!r}] must be {what} (a string), got {_shown(text)}", argument)
    return dict(value)


def keywords(given: Mapping, allowed, where: str) -> None:
    """Refuse unknown keyword arguments, suggesting the nearest known one."""
    for name in given:
        if name not in allowed:
            near = difflib.get_close_matches(str(name), list(allowed), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ArgumentError(
                f"{where} got an unknown keyword argument {name!r}{hint} "
                f"(known: {', '.join(sorted(allowed))})", str(name))


def prompts(value, argument: str = "prompts") -> list:
    """A non-empty list of prompts, each a string or a list of chat messages."""
    if isinstance(value, str):
        raise ArgumentError(
            f"{argument} must be a list of prompts, got one string; wrap it: [{value!r:.40}]",
            argument)
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        raise ArgumentError(
            f"{argument} must be a list of prompts (strings or chat message lists), "
            f"got {_shown(value)}", argument)
    if not value:
        raise GenerationParamsError(f"{argument}: no prompts given; pass at least one", argument)
    for i, prompt in enumerate(value):
        if isinstance(prompt, (list, tuple)):
            messages(prompt, f"{argument}[{i}]")
        elif not isinstance(prompt, str):
            raise ArgumentError(
                f"{argument}[{i}] must be a string or a list of chat messages "
                f"({{'role': 'user', 'content': '...'}}), got {_shown(prompt)}",
                f"{argument}[{i}]")
        not_empty(prompt, f"{argument}[{i}]")
    return list(value)


class EmptyPromptError(ArgumentError):
    """A prompt with no text, or one that renders to no tokens for some term: a model needs
    something to continue, so it is refused alike at the API, the command line and the server."""


def not_empty(prompt, argument: str) -> None:
    """Refuse a prompt with no text: "" or a chat whose every message's content is ""."""
    texts = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
    if not any(texts):
        raise EmptyPromptError(f"{argument}: the prompt is empty; give some text to continue "
                               "(or a chat message with content)", argument)


def messages(value, argument: str) -> None:
    """A chat: a non-empty list of {'role': system|user|assistant, 'content': str}."""
    if not value:
        raise ArgumentError(f"{argument} is an empty conversation; give at least one message",
                            argument)
    for j, message in enumerate(value):
        where = f"{argument}[{j}]"
        if not isinstance(message, Mapping):
            raise ArgumentError(f"{where} must be a message {{'role': ..., 'content': ...}}, "
                                f"got {_shown(message)}", where)
        extra = set(message) - {"role", "content", "name"}
        if extra or "role" not in message or "content" not in message:
            raise ArgumentError(f"{where} must have exactly 'role' and 'content' keys, got "
                                f"{sorted(map(str, message))}", where)
        if message["role"] not in ROLES:
            raise ArgumentError(f"{where}['role'] must be one of {', '.join(ROLES)}, got "
                                f"{_shown(message['role'])}", f"{where}.role")
        if not isinstance(message["content"], str):
            raise ArgumentError(f"{where}['content'] must be a string, got "
                                f"{_shown(message['content'])}", f"{where}.content")


def name(value, argument: str) -> str:
    """A term, model or parameter name: an identifier a formula can spell."""
    if not isinstance(value, str) or not value.isidentifier():
        raise ArgumentError(f"{argument}: {_shown(value)} is not a name a formula can use "
                            "(letters, digits and _, not starting with a digit)", argument)
    return value


def model_sources(value, argument: str = "models") -> dict:
    """A non-empty mapping name -> checkpoint path, model, (model, tokenizer) or LoadedModel."""
    if not isinstance(value, Mapping) or not value:
        raise ArgumentError(f"{argument} must be a non-empty mapping name -> checkpoint path "
                            f"or model, got {_shown(value)}", argument)
    for key, source in value.items():
        name(key, f"{argument} key")
        if source is None or isinstance(source, (bool, numbers.Number, Mapping, list)) or (
                isinstance(source, (str, os.PathLike)) and not os.fspath(source)):
            raise ArgumentError(f"{argument}[{key!r}] must be a checkpoint path or a model, "
                                f"got {_shown(source)}", f"{argument}[{key!r}]")
    return dict(value)


def _shown(value) -> str:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"
