"""The synthesized chains as a Hugging Face ``datasets`` dataset, with its stats file.

Columns: ``images`` (a list of Image features: the scene, then every observation in order),
``messages`` (chat format with typed content parts, as TRL reads it), ``kind`` (fine/coarse),
``recipe``, ``question`` (id of the question the chain answers) and ``skip_turns`` (assistant
turns trained without loss: a recovery chain's wrong first call, a repair chain's broken one).
``stats.json`` counts chains generated, kept, and rejected by reason, per recipe.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from emulate.vision import object_chains, objects, scenes, synthesis
from emulate.vision.synthesis import conversation

WORLDS = ("tiles", "objects")
COLUMNS = ("images", "messages", "kind", "recipe", "question", "skip_turns")
CHUNK_ROWS = 256  # rows held in memory before they are written out (pictures are large)


VARIANTS = ("focus_area", "zoom_in", "reuse", "all")
# The recipes a member of each variant learns from: the main ones, and recovery chains.
VARIANT_RECIPES = {
    "focus_area": (("focus_area",), ("recovery-focus_area", "repair-focus_area")),
    "zoom_in": (("zoom_in",), ("recovery-zoom_in", "repair-zoom_in")),
    "reuse": (("reuse",), ("repair-reuse",)),
    "all": (("focus_area", "zoom_in"), ("recovery-all", "repair-focus_area", "repair-zoom_in")),
}
# The objects world's tool member: tight looks, and every way of recovering.
OBJECT_RECIPES = (("focus_area", "zoom_in"),
                  ("reuse", "recovery-loose", "recovery-wrong", "repair", "withheld"))
RECOVERY_SHARE = 0.2


def world_parts(world: str):
    """(questions, fine recipes, synthesize, skip_turns) of a world."""
    if world == "tiles":
        def skip(recipe: str) -> list[int]:
            return [0] if recipe.startswith(("recovery-", "repair-")) else []

        return scenes.questions, synthesis.FINE_RECIPES, synthesis.synthesize, skip
    if world == "objects":
        oc = object_chains
        return objects.questions, oc.FINE_RECIPES, oc.synthesize, oc.skip_turns
    raise ValueError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")


def synthesize_dataset(seed: int, n: int, out: str | Path, progress=None,
                       world: str = "tiles") -> dict:
    """``n`` questions (half fine, half coarse) -> verified chains saved under ``out``."""
    questions, fine_recipes, synthesize, skip_turns = world_parts(world)
    out = Path(out)
    rows, parts = [], []
    generated, kept, rejected = Counter(), Counter(), Counter()
    n_fine = n // 2
    work = [("fine", q) for q in questions(seed, "train", n_fine, "fine")]
    work += [("coarse", q) for q in questions(seed, "train", n - n_fine, "coarse")]
    for qid, (kind, (scene, question)) in enumerate(work):
        recipes = fine_recipes if kind == "fine" else ("direct",)
        for recipe in recipes:
            rng = random.Random(f"chain-{seed}-{qid}-{recipe}")
            trace, reason = synthesize(scene, question, recipe, rng)
            generated[recipe] += 1
            if reason is not None:
                rejected[f"{recipe}:{reason}"] += 1
                continue
            kept[recipe] += 1
            rows.append({"images": [o.image for o in trace.observations],
                         "messages": conversation(trace), "kind": kind, "recipe": recipe,
                         "question": qid, "skip_turns": skip_turns(recipe)})
        if len(rows) >= CHUNK_ROWS:
            parts.append(save_rows(rows, out / f".part{len(parts)}"))
            rows = []
        if progress:
            progress(qid + 1, len(work))
    save_rows(rows, out, parts)
    reasons = Counter()
    for key, count in rejected.items():
        reasons[key.split(":")[1]] += count
    stats = {
        "world": world,
        "questions": len(work),
        "generated": sum(generated.values()),
        "kept": sum(kept.values()),
        "rejected": sum(rejected.values()),
        "rejected_by_reason": dict(reasons),
        "by_recipe": {
            r: {"generated": generated[r], "kept": kept[r]} for r in sorted(generated)
        },
        "rejected_by_recipe_and_reason": dict(sorted(rejected.items())),
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def save_rows(rows: list[dict], out: str | Path, parts: list[Path] = ()) -> Path:
    """Chain rows (the columns above) saved as a dataset under ``out/dataset``, after the rows
    of ``parts`` (folders this wrote before, removed once joined); returns ``out``."""
    import shutil

    from datasets import Dataset, Features, Image, List, Value, concatenate_datasets

    out = Path(out)
    columns = {k: [row[k] for row in rows] for k in COLUMNS}
    columns["images"] = [[png(image) for image in images] for images in columns["images"]]
    part = {"type": Value("string"), "text": Value("string")}
    features = Features(
        {
            "images": List(Image()),
            "messages": List({"role": Value("string"), "content": List(part)}),
            "kind": Value("string"),
            "recipe": Value("string"),
            "question": Value("int64"),
            "skip_turns": List(Value("int64")),
        }
    )
    dataset = Dataset.from_dict(columns, features=features)
    if parts:
        dataset = concatenate_datasets([load_chains(p) for p in parts] + [dataset])
    dataset.save_to_disk(str(out / "dataset"))
    for part in parts:
        shutil.rmtree(part)
    return out


def png(image) -> dict:
    """A picture as lossless PNG bytes at zlib level 1: a third of the default level's time on
    a noisy scene, a few percent larger."""
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


def chains_world(directory: str | Path) -> str:
    """The world a chains folder was synthesized in (``tiles`` for folders from before)."""
    stats = Path(directory) / "stats.json"
    return json.loads(stats.read_text()).get("world", "tiles") if stats.is_file() else "tiles"


def load_chains(directory: str | Path):
    from datasets import load_from_disk

    return load_from_disk(str(Path(directory) / "dataset"))


def member_rows(dataset, member: str, seed: int, world: str = "tiles") -> list[int]:
    """Row indices a member trains on: ``direct``, or a tool variant (one chain per question)."""
    recipes = dataset["recipe"]
    by_question: dict[int, dict[str, int]] = {}
    for index, (question, recipe) in enumerate(zip(dataset["question"], recipes, strict=True)):
        by_question.setdefault(question, {})[recipe] = index
    chosen = []
    for question, available in sorted(by_question.items()):
        if member == "direct" or set(available) == {"direct"}:
            if "direct" in available:
                chosen.append(available["direct"])
            continue
        main, recovery = OBJECT_RECIPES if world == "objects" else VARIANT_RECIPES[member]
        rng = random.Random(f"pick-{seed}-{question}-{member}")
        wanted = recovery if recovery and rng.random() < RECOVERY_SHARE else main
        options = [available[r] for r in wanted if r in available]
        options = options or [available[r] for r in main + recovery if r in available]
        if options:
            chosen.append(rng.choice(options))
    return chosen
