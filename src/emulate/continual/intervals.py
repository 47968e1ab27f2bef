"""Means and 95% t-intervals over seeds: a difference is a finding only where intervals part.

For n values the interval is mean +- t(0.975, n - 1) * s / sqrt(n), s the sample standard
deviation (scipy's Student t quantile); one seed gives an interval of zero width around it,
which says nothing about spread and is reported as such (``n`` = 1).
"""

from __future__ import annotations

import math

METRICS = (
    ("final", "ka"),
    ("final", "zs"),
    ("final", "gm"),
    ("average", "ka"),
    ("average", "zs"),
    ("average", "gm"),
    ("forgetting",),
    ("bwt",),
    ("fwt",),
    ("retrieval", "i2t_r5"),
    ("retrieval", "t2i_r5"),
)


def t_interval(values: list[float], confidence: float = 0.95) -> dict:
    """{"mean", "low", "high", "n"} of ``values``."""
    from scipy.stats import t

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": mean, "high": mean, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n}


def _value(result: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


def summarize_seeds(runs: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """Per method (its runs, one per seed), per metric ("final.ka", "bwt", ...): the interval."""
    out = {}
    for method, results in runs.items():
        out[method] = {}
        for path in METRICS:
            values = [_value(r, path) for r in results]
            if all(isinstance(v, int | float) for v in values):
                out[method][".".join(path)] = t_interval([float(v) for v in values])
    return out


def separated(a: dict, b: dict) -> bool:
    """Whether two intervals do not overlap."""
    return a["high"] < b["low"] or b["high"] < a["low"]
