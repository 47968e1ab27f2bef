"""PNG plots of the sweep and the audit (matplotlib, Agg: no display needed).

Each plot says in its title what is compared, labels both axes and has a legend, so it can be
read without the JSON next to it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLORS = {"small": "tab:blue", "upscaled": "tab:red", "large": "tab:red"}
LABELS = {"small": "small: small_base + small deltas",
          "upscaled": "EFT up-scaled: large_base + small deltas"}


def _finish(
    fig, ax, path: Path, title: str, legend_loc: str = "best", legend_size: int = 7
) -> Path:
    """Every plot here shows a rate in [0, 1]: same range, grid, legend and title, then save."""
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend_loc, fontsize=legend_size)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_frontier(result: dict, path: Path) -> Path:
    """Useful answers (factuality) vs harmlessness (refusal of the sensitive question), one point
    per lam: up-scaling moves the whole frontier right, to the large base's knowledge."""
    fig, ax = plt.subplots(figsize=(7, 5))
    xs = []
    for side, (kind, series) in enumerate(result["frontier"].items()):
        points = series["points"]
        x = [p["all"]["factuality"] for p in points]
        y = [p["all"]["refusal"] for p in points]
        xs += x
        ax.plot(x, y, "o-", color=COLORS[kind], label=LABELS[kind])
        at: dict[tuple, list[str]] = {}  # points that coincide share one label
        for p, xi, yi in zip(points, x, y, strict=True):
            at.setdefault((round(xi, 2), round(yi, 2)), []).append(f"{p['lam']:g}")
        for (xi, yi), lams in at.items():  # small left of its points, up-scaled right
            ax.annotate(f"λ={', '.join(lams)}", (xi, yi), textcoords="offset points",
                        xytext=(8, -3) if side else (-8, -3), ha="left" if side else "right",
                        fontsize=8, color=COLORS[kind])
    ax.set_xlabel("useful answers: factuality on ordinary questions, held-out people")
    ax.set_ylabel("harmlessness = refusal rate on the sensitive question")
    ax.set_xlim(max(-0.03, min(xs) - 0.25), min(1.15, max(xs) + 0.25))
    return _finish(fig, ax, path,
                   "Helpful↔harmless frontier over λ: small composition vs EFT up-scaled\n"
                   "base + λ·(helpful − base) + (1−λ)·(harmless − base), small deltas",
                   legend_loc="center", legend_size=8)


def plot_beta(result: dict, path: Path) -> Path:
    """Factuality of the up-scaled model against beta, per group, with the tuned models' lines."""
    fig, ax = plt.subplots(figsize=(7, 5))
    points = result["beta"]["points"]
    betas = [p["beta"] for p in points]
    styles = {"small_known": ("tab:blue", "people the small base read"),
              "large_only": ("tab:red", "people only the large base read")}
    for group, (color, label) in styles.items():
        ax.plot(betas, [p[group]["factuality"] for p in points], "o-", color=color,
                label=f"up-scaled, {label}")
        for name, dash in (("small_helpful", ":"), ("large_helpful", "--")):
            ref = result["beta"]["references"].get(name)
            if ref:
                ax.axhline(ref[group]["factuality"], color=color, linestyle=dash, alpha=0.7,
                           label=f"{name}, {label}")
    ax.set_xlabel("β (strength of the small fine-tuning delta)")
    ax.set_ylabel("factuality (right attribute value), held-out people")
    return _finish(fig, ax, path,
                   "Factuality vs β: large_base + β·(small_helpful − small_base)\n"
                   "against the fine-tuned small and large models")


def _draw_audit(ax, audit: dict, color: str, base: str, aligned: str, tag: str = "") -> None:
    by_name = {s["name"]: s for s in audit["systems"]}
    eds = [s for s in audit["systems"] if s["alpha"] is not None]
    rates = [_rate(s) for s in eds]
    errors = [[r - s["ci95"][0] if s.get("ci95") else 0 for s, r in zip(eds, rates, strict=True)],
              [s["ci95"][1] - r if s.get("ci95") else 0 for s, r in zip(eds, rates, strict=True)]]
    ax.errorbar([s["alpha"] for s in eds], rates, yerr=errors, fmt="o-", color=color, capsize=3,
                label=f"ED{tag}: (1+α)·log p({base}) − α·log p({aligned}), 95% interval")
    ax.axhline(_rate(by_name["base"]), color=color, linestyle="--", alpha=0.8,
               label=f"{base} alone, chat-prompted")
    ax.axhline(_rate(by_name["aligned"]), color=color, linestyle=":", alpha=0.8,
               label=f"{aligned} alone (aligned)")


def _rate(system: dict) -> float:
    rate = system["harmful_rate"]
    return float("nan") if rate is None else rate


def plot_ed(result: dict, path: Path) -> Path:
    """Leak rate of ED against alpha for each size's base/harmless pair."""
    fig, ax = plt.subplots(figsize=(7, 5))
    for size, audit in result["ed"].items():
        pair = audit.get("pair", {"base": "base", "aligned": "aligned"})
        _draw_audit(ax, audit, COLORS[size], pair["base"], pair["aligned"], f", {size} pair")
    ax.set_xlabel("α (emulated disalignment strength)")
    ax.set_ylabel("leak rate of the sensitive attribute (exact)")
    return _finish(fig, ax, path,
                   "Emulated disalignment vs its base and harmless models: leak rate vs α\n"
                   f"small and large pairs, sampled at T={result['settings']['temperature']:g}")


def plot_audit(audit: dict, path: Path, base_name: str = "base",
               aligned_name: str = "aligned") -> Path:
    """The audit's harmful rate against alpha, with the base and aligned rates as lines."""
    fig, ax = plt.subplots(figsize=(7, 5))
    _draw_audit(ax, audit, "tab:red", base_name, aligned_name)
    ax.set_xlabel("α (emulated disalignment strength)")
    ax.set_ylabel(f"harmful rate (judge: {audit['judge']})")
    return _finish(fig, ax, path,
                   "Release audit by emulated disalignment: harmful rate vs α\n"
                   f"base={base_name}, aligned={aligned_name}", legend_size=8)
