"""The tool ablation: members trained on chains with one tool each, against all tools together.

The variants ``focus_area``, ``zoom_in`` and ``reuse`` are trained from the aligned model like the
built members (``ablation/<variant>/``); ``all`` is the built ``tools`` member. Training and
evaluation share one pool of workers: each variant is evaluated as soon as it is trained, and
``all`` at once, so both cores stay busy. The result is cached in ``ablation.json``, keyed by the
world's key, ``n`` and the evaluation code; trained variants are kept while the world's key holds.
"""

from __future__ import annotations

import json
from pathlib import Path

from emulate.common.cache import build_key
from emulate.vision.build import SIZES, load_world, train_member
from emulate.vision.dataset import VARIANTS
from emulate.vision.workers import build_workers, run_jobs

EVALUATION_CODE = ("tools.py", "runtime.py", "adapters.py", "evaluate.py", "ablation.py")


def ablation(world: Path, n: int | None = None, workers: int | None = None,
             progress: bool = True) -> dict:
    """``{variant: {"fine": metrics, "coarse": metrics}}`` on ``n`` held-out questions per kind."""
    from emulate.common.progress import TrainingBars

    manifest = load_world(world)
    cache, key = world / "ablation.json", result_key(manifest, n)
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["result"]
    size, seed = manifest["size"], manifest["seed"]
    n_eval = n or SIZES[size].eval_questions
    trained = {v: world / "ablation" / v for v in VARIANTS if v != "all"}
    paths = trained | {"all": world / "tools"}

    def evaluation(variant: str) -> dict:
        return {("eval", variant): (evaluate_variant, (paths[variant], seed, n_eval, variant))}

    trained_for = world / "ablation" / "world-key"
    if trained_for.exists() and trained_for.read_text() != manifest["key"]:
        for path in trained.values():
            (path / "config.json").unlink(missing_ok=True)  # trained on another build
    jobs = {}
    for variant, path in paths.items():
        if (path / "config.json").exists():
            jobs |= evaluation(variant)
        else:
            jobs[("train", variant)] = (train_member, (world, variant, size, seed, path))
    jobs = dict(sorted(jobs.items(), key=lambda job: job[0][0] != "train"))  # longest first

    def follow(name: tuple, result) -> dict:
        return evaluation(name[1]) if name[0] == "train" else {}

    bars = TrainingBars(progress)
    with bars:
        done = run_jobs(jobs, bars.event, workers or build_workers(), follow)
    trained_for.write_text(manifest["key"])
    result = {v: done[("eval", v)] for v in VARIANTS}
    cache.write_text(json.dumps({"key": key, "n": n, "result": result}))
    return result


def result_key(manifest: dict, n: int | None) -> str:
    """A new build, another ``n`` or a change to the evaluation code measures again."""
    here = Path(__file__).parent
    return build_key({"world": manifest["key"], "n": n}, [here / f for f in EVALUATION_CODE])


def evaluate_variant(path: Path, seed: int, n: int, variant: str, report) -> dict:
    """One variant's own calls on the held-out questions (a job of the worker pool)."""
    from emulate.vision.adapters import Adapter
    from emulate.vision.evaluate import evaluate

    model = Adapter.load(path)
    label = f"eval {variant}"
    report(("add", label, 2 * n))
    return evaluate(model, seed, n, "own", to_normalized=model.to_normalized,
                    progress=lambda done, total: report(("step", label, done, None)))


def ablation_plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(result)
    for offset, kind in ((-0.2, "fine"), (0.2, "coarse")):
        ax.bar([i + offset for i in range(len(names))],
               [100 * result[v][kind]["accuracy"] for v in names], 0.4, label=kind)
    chance = 100 * result[names[0]]["fine"]["chance"]
    ax.axhline(chance, color="grey", linestyle=":", label="chance")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.set_title("tool ablation: chains with one tool, or all three")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
