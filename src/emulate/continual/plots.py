"""The picture of a comparison: each method's trajectory in the KA-ZS plane."""

from __future__ import annotations

from pathlib import Path


def trajectory_plot(results: dict[str, dict], path: Path, title: str = "") -> Path:
    """One line per method from the zero-shot start through every task; the end marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    start = next(iter(results.values()))["start"]
    ax.scatter([start["ka"]], [start["zs"]], marker="*", s=180, color="black", zorder=5)
    ax.annotate(
        "zero-shot start",
        (start["ka"], start["zs"]),
        textcoords="offset points",
        xytext=(6, -12),
        fontsize=8,
    )
    for name, r in results.items():
        ka = [start["ka"]] + [p["ka"] for p in r["trajectory"]]
        zs = [start["zs"]] + [p["zs"] for p in r["trajectory"]]
        (line,) = ax.plot(ka, zs, marker="o", markersize=3, linewidth=1.2, label=name)
        ax.scatter([ka[-1]], [zs[-1]], s=60, color=line.get_color(), edgecolor="black", zorder=4)
    ax.set_xlabel("knowledge accumulation KA (adaptation datasets)")
    ax.set_ylabel("zero-shot retention ZS (eval-only datasets)")
    ax.set_title(title or "Trajectories over the stream (large dot: final)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def matrix_plot(results: dict[str, dict], path: Path) -> Path:
    """Each method's per-task accuracy matrix as a heat map (row i: after task i; column j:
    task j's concepts), to read beside the trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    named = {n: r["matrix"] for n, r in results.items() if r.get("matrix")}
    # constrained layout keeps each panel's labels off its neighbours and the colour bar
    fig, axes = plt.subplots(1, max(1, len(named)), figsize=(2.6 * max(1, len(named)) + 1, 3.2),
                             layout="constrained", sharey=True)
    axes = list(getattr(axes, "flat", [axes]))
    image = None
    for i, (ax, (name, matrix)) in enumerate(zip(axes, named.items(), strict=False)):
        image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("task j (its concepts)", fontsize=8)
        if i == 0:
            ax.set_ylabel("after task i", fontsize=8)
        ticks = range(len(matrix))
        ax.set_xticks(ticks, [str(t + 1) for t in ticks], fontsize=7)
        ax.set_yticks(ticks, [str(t + 1) for t in ticks], fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01, label="accuracy")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
