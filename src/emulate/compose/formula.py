"""Formulas over model log-probs: parse `large + 1.0*(chat_small - small)` into name -> weight.

A formula is a linear combination of term names. It is parsed with `ast` (never `eval`) and
reduced to a dictionary of weights; products or quotients of two terms are not linear and are
rejected with a pointer at the offending part.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping

from emulate.common.errors import FormulaError

Weights = dict[str, float]
NOT_FINITE = ("nan", "inf", "infinity")  # what float() reads as a non-finite number


def parse_formula(
    text: str,
    known_names: Iterable[str] | None = None,
    parameters: Mapping[str, float] | None = None,
) -> Weights:
    """Reduce a formula to {term name: weight}, in order of first appearance.

    `parameters` are names that stand for numbers (e.g. `beta` in `large + beta*(chat - small)`),
    so a knob can be changed per request without rewriting the formula.

    Terms whose weights cancel to zero are kept with weight 0.0 so that a user who writes
    `a + b - b` gets a clear result rather than a missing name. Raises FormulaError on anything
    that is not a linear combination of known names with a nonzero weight somewhere.
    """
    if not isinstance(text, str) or not text.strip():
        raise FormulaError("the formula is empty; write e.g. 'large + 1.0*(chat_small - small)'")
    source = text.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        offset = (exc.offset or 1) - 1
        raise FormulaError(f"syntax error in formula: {exc.msg}", source, offset) from None
    weights = _linear(tree.body, source, dict(parameters or {}))
    if not weights.terms:
        raise FormulaError(
            "the formula has no model terms, only numbers; name at least one model", source, 0
        )
    if known_names is not None:
        known = list(known_names)
        for name, position in weights.positions.items():
            if name not in known:
                raise FormulaError(
                    f"unknown term {name!r}: no model is named {name!r} "
                    f"(known names: {', '.join(sorted(known)) or 'none'})",
                    source,
                    position,
                )
    if all(w == 0.0 for w in weights.terms.values()):
        raise FormulaError("all weights in the formula are zero; nothing to sample from", source, 0)
    # A constant shifts every log-prob equally and vanishes in the normalization: drop it.
    return dict(weights.terms)


class _Linear:
    """A linear expression: constant + sum of weight * name."""

    def __init__(self, constant: float = 0.0, terms=None, positions=None):
        self.constant = constant
        self.terms: dict[str, float] = dict(terms or {})
        self.positions: dict[str, int] = dict(positions or {})

    def is_constant(self) -> bool:
        return not self.terms

    def scaled(self, factor: float) -> _Linear:
        return _Linear(
            self.constant * factor,
            {k: v * factor for k, v in self.terms.items()},
            self.positions,
        )

    def plus(self, other: _Linear) -> _Linear:
        terms = dict(self.terms)
        for name, weight in other.terms.items():
            terms[name] = terms.get(name, 0.0) + weight
        positions = {**other.positions, **self.positions}
        return _Linear(self.constant + other.constant, terms, positions)


def _linear(node: ast.AST, source: str, parameters: dict[str, float]) -> _Linear:
    col = getattr(node, "col_offset", 0)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaError(f"unexpected literal {node.value!r}", source, col)
        if not math.isfinite(node.value):
            raise FormulaError("a coefficient must be a finite number", source, col)
        return _Linear(float(node.value))
    if isinstance(node, ast.Name):
        if node.id in parameters:
            return _Linear(float(parameters[node.id]))
        if node.id.lower() in NOT_FINITE:
            raise FormulaError(f"{node.id!r} is not a number a formula can use: coefficients "
                               "must be finite numbers (and no model may be named "
                               f"{node.id!r})", source, col)
        return _Linear(0.0, {node.id: 1.0}, {node.id: col})
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _linear(node.operand, source, parameters)
        return inner.scaled(-1.0 if isinstance(node.op, ast.USub) else 1.0)
    if isinstance(node, ast.BinOp):
        left = _linear(node.left, source, parameters)
        right = _linear(node.right, source, parameters)
        if isinstance(node.op, ast.Add):
            return left.plus(right)
        if isinstance(node.op, ast.Sub):
            return left.plus(right.scaled(-1.0))
        if isinstance(node.op, ast.Mult):
            if left.is_constant():
                return right.scaled(left.constant)
            if right.is_constant():
                return left.scaled(right.constant)
            raise FormulaError(
                "a product of two model terms is not a linear combination; "
                "multiply terms by numbers only",
                source,
                col,
            )
        if isinstance(node.op, ast.Div):
            if right.is_constant():
                if right.constant == 0.0:
                    raise FormulaError("division by zero", source, node.right.col_offset)
                return left.scaled(1.0 / right.constant)
            raise FormulaError(
                "dividing by a model term is not a linear combination; divide by numbers only",
                source,
                node.right.col_offset,
            )
        raise FormulaError(
            f"operator {type(node.op).__name__} is not allowed; use + - * and parentheses",
            source,
            col,
        )
    raise FormulaError(
        f"{type(node).__name__} is not allowed in a formula; "
        "use names, numbers, + - * and parentheses",
        source,
        col,
    )


def format_weights(weights: Mapping[str, float]) -> str:
    """Write weights back as a formula, e.g. `large + small_chat - small`."""
    parts: list[str] = []
    for name, weight in weights.items():
        if weight == 0.0:
            continue
        sign = "-" if weight < 0 else "+"
        magnitude = abs(weight)
        term = name if magnitude == 1.0 else f"{magnitude:g}*{name}"
        parts.append(f"{sign} {term}")
    text = " ".join(parts)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def upscale(base: str, tuned: str, ref: str, beta: float = 1.0) -> str:
    """EFT up-scaling: a large base plus beta times a small model's fine-tuning delta."""
    return f"{base} + {beta:g}*({tuned} - {ref})"


def downscale(base: str, tuned: str, ref: str, beta: float = 1.0) -> str:
    """EFT down-scaling: a small base plus beta times a large model's fine-tuning delta.

    The arithmetic is the same as up-scaling; only the roles' sizes differ.
    """
    return f"{base} + {beta:g}*({tuned} - {ref})"


def mix(base: str, ref: str, tuned: Mapping[str, float], beta: float = 1.0) -> str:
    """EFT behaviour mixing: base + beta * sum_i lambda_i * (tuned_i - ref).

    With lambdas summing to one this interpolates between fine-tunes' implicit rewards
    (e.g. helpful vs harmless) at test time.
    """
    if not tuned:
        raise FormulaError("mix() needs at least one tuned model with its weight")
    deltas = " + ".join(f"{lam:g}*({name} - {ref})" for name, lam in tuned.items())
    return f"{base} + {beta:g}*({deltas})"


def disalign(base: str, aligned: str, alpha: float) -> str:
    """Emulated disalignment: (1 + alpha) * base - alpha * aligned, alpha >= 0."""
    if alpha < 0:
        raise FormulaError(f"alpha must be >= 0 for emulated disalignment, got {alpha:g}")
    return f"{1 + alpha:g}*{base} - {alpha:g}*{aligned}"
