"""A built world's held-out questions as a benchmark file, so the world is one more benchmark.

``export_world`` writes ``questions.jsonl`` in the plain layout that ``emulate vision bench``
reads (``image``, ``question``, ``options``, ``answer``, ``category`` = fine | coarse,
``question_id``) and each scene as a lossless PNG beside it: the same scenes and questions, in
the same order, that ``emulate vision eval`` scores, so ``bench`` on the export and ``eval`` on
the same member agree.
"""

from __future__ import annotations

import json
from pathlib import Path

from emulate.vision.build import SIZES, load_world
from emulate.vision.report import MAX_EVAL_QUESTIONS, InputError
from emulate.vision.scenes import questions

KINDS = ("fine", "coarse")
FILE = "questions.jsonl"


def export_world(world: str | Path, out: str | Path, n: int | None = None) -> Path:
    """Write ``out/questions.jsonl`` and ``out/images/``; returns the JSONL's path."""
    manifest = load_world(world)
    n = n if n is not None else SIZES[manifest["size"]].eval_questions
    if isinstance(n, bool) or not 1 <= n <= MAX_EVAL_QUESTIONS:
        raise InputError(f"--n {n} is out of range: give 1 to {MAX_EVAL_QUESTIONS} per kind")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for kind in KINDS:
        for index, (scene, question) in enumerate(questions(manifest["seed"], "eval", n, kind)):
            name = f"images/{kind}-{index:04d}.png"
            scene.render().save(out / name)
            lines.append({
                "question_id": f"{kind}-{index}",
                "image": name,
                "question": question.text,
                "options": list(question.choices),
                "answer": question.answer,
                "category": kind,
            })
    path = out / FILE
    partial = path.with_suffix(".jsonl.partial")
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    partial.replace(path)
    return path
