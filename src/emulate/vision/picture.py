"""A trace drawn as one picture: the scene with each call's region, each observation, the answer."""

from __future__ import annotations

import textwrap
from pathlib import Path

from emulate.vision.runtime import Trace
from emulate.vision.scenes import Question


def draw_trace(trace: Trace, question: Question | None, path: Path,
               scene_title: str = "scene (model sees 32x32)") -> Path:
    """``question`` None: a user's image and question (no known target, no verdict)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    panels = len(trace.observations)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.6), squeeze=False)
    axes = axes[0]
    axes[0].imshow(trace.observations[0].image, interpolation="nearest")
    axes[0].set_title(scene_title, fontsize=8)
    for index, observation in enumerate(trace.observations[1:], 1):
        x0, y0, x1, y1 = observation.region
        axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="white", lw=1.5))
        axes[0].text(x0 + 1, y0 + 6, str(index), color="white", fontsize=7)
        step = next(s for s in trace.steps if s.observation == index)
        axes[index].imshow(observation.image, interpolation="nearest")
        axes[index].set_title(f"{index}: {step.call['name']}", fontsize=8)
    if question is not None:
        x0, y0, x1, y1 = question.target.box
        axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="lime", lw=0.8))
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if question is None:
        answer = trace.answer if trace.answer is not None else f"no answer ({trace.stopped})"
        title = textwrap.fill(f"{trace.question}  ->  {answer}", 40 * panels)
        fig.suptitle(title, fontsize=9)
    else:
        right = trace.answer == question.answer
        verdict = "right" if right else f"wrong (truth: {question.answer})"
        fig.suptitle(f"{question.text}  ->  {trace.answer}  [{verdict}]", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
