"""What the commands show: member evaluation, answering one image, the demo."""

from __future__ import annotations

import json
from pathlib import Path

from emulate.common.errors import EmulateError
from emulate.vision.build import load_world, size_of
from emulate.vision.evaluate import MODES, evaluate

MEMBERS = ("direct", "tools")
MAX_EVAL_QUESTIONS = 100_000  # per kind: a typo must not buy days of generation


class InputError(EmulateError, ValueError):
    """A question, member or mode the commands cannot take."""


def check_question(question: str) -> str:
    if not question or not question.strip():
        raise InputError("the question is empty; ask something about the image")
    return question.strip()


def adapter(path: Path):
    from emulate.vision.adapters import Adapter

    return Adapter.load(path)


def evaluate_member(world: Path, member: str, mode: str, n: int | None = None) -> dict:
    """One member's metrics on ``n`` held-out questions per kind (the world's default if None)."""
    if n is not None and (isinstance(n, bool) or not 1 <= n <= MAX_EVAL_QUESTIONS):
        raise InputError(
            f"--n {n} is out of range: give 1 to {MAX_EVAL_QUESTIONS} held-out questions per "
            "kind, or leave it out for the world's default"
        )
    if member not in MEMBERS:
        raise InputError(f"unknown member {member!r}; choose direct or tools")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    manifest = load_world(world)
    n = n if n is not None else size_of(manifest).eval_questions
    model = adapter(world / member)
    return evaluate(model, manifest["seed"], n, mode, to_normalized=model.to_normalized,
                    world=manifest.get("world", "tiles"))


def table(rows: dict):
    from rich.table import Table

    out = Table(title="thinking with images: held-out questions")
    for column in ("run", "kind", "accuracy", "chance", "answered", "valid calls",
                   "containment", "IoU>=.5", "calls/q", "no call", "n"):
        out.add_column(column)
    for name, result in rows.items():
        for kind in ("fine", "coarse"):
            m = result[kind]
            out.add_row(name, kind, _pct(m["accuracy"]), _pct(m["chance"]),
                        _pct(m.get("answered")), _pct(m["valid_calls"]), _pct(m["containment"]),
                        _pct(m.get("box_iou50")),
                        f"{m['calls_per_question']:.2f}", _pct(m["without_calls"]), str(m["n"]))
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def answer_question(model_path: Path, image_path: Path, question: str, save: Path,
                    max_calls: int = 4, max_turns: int | None = None,
                    call_format: str = "auto", max_new_tokens: int | None = None):
    """One question about one image file: the trace, and every observation saved as a PNG."""
    from emulate.vision.adapters import MAX_NEW_TOKENS, Adapter
    from emulate.vision.formats import check_format
    from emulate.vision.images import load_image
    from emulate.vision.runtime import check_caps, run

    question = check_question(question)
    check_caps(max_calls, max_turns)
    if call_format != "auto":
        check_format(call_format)
    image = load_image(image_path)
    tokens = MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
    model = Adapter.load(model_path, call_format=call_format, max_new_tokens=tokens)
    trace = run(model, image, question, max_calls=max_calls, max_turns=max_turns,
                to_normalized=model.to_normalized)
    save.mkdir(parents=True, exist_ok=True)
    files = []
    for i, observation in enumerate(trace.observations):
        files.append(save / f"observation-{i}.png")
        observation.image.save(files[-1])
    (save / "trace.json").write_text(json.dumps(trace.to_dict(), indent=1))
    from emulate.vision.picture import draw_trace

    files.append(draw_trace(trace, None, save / "trace.png", seen_title(model, image)))
    return trace, files


def seen_title(model, image) -> str:
    """"640x480 image (model sees 644x476)": the image and the model's input size."""
    from emulate.vision.adapters import QWEN_FAMILIES

    if model.family in QWEN_FAMILIES:
        width, height = model.seen_size(image)
    else:
        images = model.processor.image_processor
        cropped = getattr(images, "do_center_crop", False) and getattr(images, "crop_size", None)
        size = dict(images.crop_size if cropped else images.size)
        side = size.get("shortest_edge")
        width, height = (side, side) if side else (size["width"], size["height"])
    return f"{image.width}x{image.height} image (model sees {width}x{height})"


def demo_rows(world: Path, n: int) -> dict:
    rows = {"direct / own": evaluate_member(world, "direct", "own", n)}
    for mode in MODES:
        rows[f"tools / {mode}"] = evaluate_member(world, "tools", mode, n)
    return rows


def draw_demo_trace(world: Path, out: Path, index: int = 0) -> Path:
    """Held-out fine question ``index`` answered by the tools member, drawn as a picture."""
    from emulate.vision.dataset import world_parts
    from emulate.vision.picture import draw_trace
    from emulate.vision.runtime import run

    manifest = load_world(world)
    questions = world_parts(manifest.get("world", "tiles"))[0]
    scene, question = questions(manifest["seed"], "eval", index + 1, "fine")[index]
    model = adapter(world / "tools")
    image = scene.render()
    trace = run(model, image, question.text, to_normalized=model.to_normalized)
    return draw_trace(trace, question, out, seen_title(model, image))
