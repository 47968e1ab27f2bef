"""Builds the objects world: chains, alignment data, and the Qwen2.5-VL family trained on them.

Every stage is the real path a user runs: chains are a ``datasets`` dataset (``emulate vision
synth``), the family is a random ``Qwen2_5_VLForConditionalGeneration`` saved with its processor
(``qwen_family.build_checkpoint``), and all training goes through ``sft.train_checkpoint`` (TRL's
``SFTTrainer``, what ``emulate vision train`` runs): alignment from the random checkpoint, then
the members ``direct`` and ``tools`` from the aligned one. The world folder:

    chains/  base/  aligned/  direct/  tools/  manifest.json

Alignment teaches the family to see before it learns when to look: captions of crops that show
an object's lines ("The lines on the red circle run rising."), finding an object by its looks
(the chains' own first turn, a tight box around it), and coarse questions on the full view.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from emulate.common.progress import TrainingBars
from emulate.vision import object_chains, objects
from emulate.vision.object_chains import box_of, call, looking
from emulate.vision.qwen_family import SHAPES, QwenShape
from emulate.vision.tools import Observation, execute

MEMBERS = ("direct", "tools")


@dataclass(frozen=True)
class ObjectSize:
    shape: QwenShape
    align_steps: int
    sft_steps: int
    batch: int
    lr: float
    questions: int  # questions synthesized into chains (half fine, half coarse)
    eval_questions: int  # held-out questions of each kind


SIZES = {
    "micro": ObjectSize(SHAPES["micro"], 12, 6, 4, 2e-3, 16, 6),
    "default": ObjectSize(SHAPES["small"], 2000, 300, 8, 1e-3, 300, 100),
}


def alignment_row(seed: int, index: int) -> dict:
    """One alignment example as a chains-dataset row (a fresh scene each)."""
    rng = objects.scene_rng(seed, "align", index)
    scene = objects.make_scene(rng)
    image = scene.render()
    thing = rng.choice(scene.things)
    task = rng.random()
    images = [image]
    if task < 0.3:
        recipe, prompt = "caption", "Describe the lines."
        original = Observation(image, (0.0, 0.0, float(image.width), float(image.height)))
        tool = "zoom_in" if thing.size == "small" else rng.choice(("focus_area", "zoom_in"))
        seen = execute(call(tool, box_of(thing.box)), [original])
        images = [seen.image]
        reply = f"The lines on the {thing.colour} {thing.shape} run {thing.code}."
    elif task < 0.75:
        description = objects.describe(scene, thing)
        recipe, prompt = "grounding", f"Find {description}."
        reply = looking(description, call("focus_area", box_of(thing.box)))
    else:
        question = objects.ask(scene, "coarse", rng)
        recipe, prompt, reply = "coarse", question.text, object_chains.answer(question.answer)
    messages = [
        {"role": "user", "content": [{"type": "text", "text": prompt},
                                     {"type": "image", "text": None}]},
        {"role": "assistant", "content": [{"type": "text", "text": reply}]},
    ]
    return {"images": images, "messages": messages, "kind": recipe, "recipe": recipe,
            "question": index, "skip_turns": []}


def alignment_examples(seed: int, n: int, adapter):
    """``n`` alignment examples drawn on the fly and rendered for the family being trained: a
    dataset of indices whose transform draws each example when the Trainer reads it (a stored
    dataset would spend more time encoding pictures than training on them)."""
    from datasets import Dataset

    from emulate.vision.sft import render

    def draw(batch: dict) -> dict:
        examples = [render(alignment_row(seed, i), adapter)[0] for i in batch["index"]]
        return {key: [e[key] for e in examples] for key in ("messages", "images", "skip_turns")}

    return Dataset.from_dict({"index": list(range(n))}).with_transform(draw)


def corpus() -> list[str]:
    """The words the family's tokenizer must hold: every description, reply and answer."""
    texts = ["Describe the lines.", "I cannot look closer; I guess.", "no object"]
    for size in objects.SIZES:
        for colour in objects.COLOURS:
            for shape in objects.SHAPES:
                for d in (f"the {colour} {shape}", f"the {size} {shape}",
                          f"the {size} {colour} {shape}", f"the {size} {colour} object"):
                    texts += [f"Find {d}.", f"Which way do the lines on {d} run?",
                              f"What colour is {d}?", f"What shape is {d}?",
                              f"Is {d} on the left or the right?",
                              f"This shows {d}, not {d}.", f"{d.capitalize()} is in the way;"
                              f" I look closer at {d}.", f"The call failed; I look again for {d}.",
                              f"The lines on {d} are too fine here; I look closer."]
                    texts += [f"The lines on {d} run {code}." for code in objects.CODES]
        texts += [f"How many {c} objects are there?" for c in objects.COLOURS]
    answers = list(objects.CODES) + list(objects.COLOURS) + list(objects.SHAPES)
    answers += list(objects.SIDES) + list(objects.COUNTS)
    return texts + [object_chains.answer(a) for a in answers]


def build(out: Path, size: str, seed: int, progress: bool) -> dict:
    """Write every stage into ``out``; the manifest's extras."""
    from emulate.vision.adapters import Adapter
    from emulate.vision.dataset import synthesize_dataset
    from emulate.vision.qwen_family import build_checkpoint
    from emulate.vision.sft import SFTOptions, fit, train_checkpoint

    spec = SIZES[size]
    started, timings = time.time(), {}
    bars = TrainingBars(progress)
    with bars:
        bars.event(("add", "synthesis", spec.questions))
        stats = synthesize_dataset(seed, spec.questions, out / "chains", world="objects",
                                   progress=lambda i, n: bars.event(("step", "synthesis", i, 0.0)))
        timings["synthesis"] = round(time.time() - started, 1)
        build_checkpoint(out / "base", spec.shape, corpus(), seed)
        losses = {}
        for name in ("aligned",) + MEMBERS:
            t0 = time.time()
            steps = spec.align_steps if name == "aligned" else spec.sft_steps
            bars.event(("add", name, steps))
            options = SFTOptions(
                max_steps=steps, batch=spec.batch, seed=seed, call_format="grammar", log=False,
                lr=spec.lr if name == "aligned" else spec.lr / 2,
                warmup=steps // 20 if name == "aligned" else 0,
                member="direct" if name == "direct" else "all",
            )
            def progress(step: int, loss: float, name: str = name) -> None:
                bars.event(("step", name, step, loss))

            if name == "aligned":
                adapter = Adapter.load(out / "base", call_format="grammar")
                report = fit(adapter, alignment_examples(seed, steps * spec.batch, adapter),
                             out / name, options, progress)
            else:
                report = train_checkpoint(out / "aligned", out / "chains", out / name, options,
                                          progress)
            bars.event(("step", name, steps, report["loss"]))
            losses[name] = report["loss"]
            timings[name] = round(time.time() - t0, 1)
    return {"size": size, "seed": seed, "members": list(MEMBERS), "synthesis": stats,
            "losses": losses, "seconds": timings,
            "build_seconds": round(time.time() - started, 1), "world": "objects"}
