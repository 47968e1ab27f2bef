"""What the commands show: member evaluation, answering one image, the demo."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from emulate.common.errors import EmulateError
from emulate.vision.build import SIZES, load_world
from emulate.vision.evaluate import MODES, evaluate

MAX_SIDE = 4096
MAX_BYTES = 32 * 1024 * 1024
MEMBERS = ("direct", "tools")


class InputError(EmulateError, ValueError):
    """An image or question the runtime cannot take."""


def read_image(path: str | Path) -> Image.Image:
    """An RGB image from a file, or a clear error (missing, unreadable, not an image, too big)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no image file at {path}; give the path of a PNG or JPEG")
    if path.stat().st_size > MAX_BYTES:
        raise InputError(f"{path} is over {MAX_BYTES // 2**20} MiB; give a smaller image")
    try:
        with Image.open(path) as image:
            if max(image.size) > MAX_SIDE:
                raise InputError(f"{path} is {image.size[0]}x{image.size[1]}: over {MAX_SIDE} px")
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{path} is not a readable image ({exc.__class__.__name__})") from None


def check_question(question: str) -> str:
    if not question or not question.strip():
        raise InputError("the question is empty; ask something about the image")
    return question.strip()


def adapter(path: Path):
    from emulate.vision.adapters import Adapter

    return Adapter.load(path)


def evaluate_member(world: Path, member: str, mode: str, n: int | None = None) -> dict:
    if member not in MEMBERS:
        raise InputError(f"unknown member {member!r}; choose direct or tools")
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    manifest = load_world(world)
    n = n or SIZES[manifest["size"]].eval_questions
    model = adapter(world / member)
    return evaluate(model, manifest["seed"], n, mode, to_normalized=model.to_normalized)


def table(rows: dict):
    from rich.table import Table

    out = Table(title="thinking with images: held-out questions")
    for column in ("run", "kind", "accuracy", "chance", "valid calls", "containment",
                   "calls/q", "no call", "n"):
        out.add_column(column)
    for name, result in rows.items():
        for kind in ("fine", "coarse"):
            m = result[kind]
            out.add_row(name, kind, _pct(m["accuracy"]), _pct(m["chance"]),
                        _pct(m["valid_calls"]), _pct(m["containment"]),
                        f"{m['calls_per_question']:.2f}", _pct(m["without_calls"]), str(m["n"]))
    return out


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def answer_question(model_path: Path, image_path: Path, question: str, save: Path,
                    max_calls: int = 4):
    from emulate.vision.runtime import run

    question = check_question(question)
    image = read_image(image_path)
    if max_calls < 0:
        raise InputError("--max-calls must be 0 or more")
    model = adapter(model_path)
    trace = run(model, image, question, max_calls=max_calls, to_normalized=model.to_normalized)
    save.mkdir(parents=True, exist_ok=True)
    files = []
    for i, observation in enumerate(trace.observations):
        files.append(save / f"observation-{i}.png")
        observation.image.save(files[-1])
    (save / "trace.json").write_text(json.dumps(trace.to_dict(), indent=1))
    return trace, files


def demo_rows(world: Path, n: int) -> dict:
    rows = {"direct / own": evaluate_member(world, "direct", "own", n)}
    for mode in MODES:
        rows[f"tools / {mode}"] = evaluate_member(world, "tools", mode, n)
    return rows


def draw_demo_trace(world: Path, out: Path) -> Path:
    """One held-out fine question answered by the tools member, drawn as a picture."""
    from emulate.vision.picture import draw_trace
    from emulate.vision.runtime import run
    from emulate.vision.scenes import questions

    manifest = load_world(world)
    scene, question = questions(manifest["seed"], "eval", 1, "fine")[0]
    model = adapter(world / "tools")
    trace = run(model, scene.render(), question.text, to_normalized=model.to_normalized)
    return draw_trace(trace, question, out)
