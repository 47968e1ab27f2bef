"""The objects world: shapes at continuous places, named by their looks, with fine line codes.

A scene is a ``CANVAS`` x ``CANVAS`` picture (672 px, three times the side of the default
family's full view) on a dark, slightly noisy background holding 4 to 7 objects. Each object has
a shape, a colour and a size (small or large) drawn per scene, sits at a random continuous place
(never overlapping another), and carries a square *badge* of thin lines in one of four
orientations (the object's *code*) at a random phase. Questions name the target by what it
looks like ("the small red triangle"), never by place; at least one other object shares a look
with it whenever the scene allows, and now and then a distractor sits right beside it, so that
only a tight box isolates it.

Why the codes are unreadable in the full view: the lines repeat every ``PERIOD`` (3) canvas
pixels and the processor's antialiased shrink by 3 averages a period away; which orientation
the lines take changes only what that shrink removes. A native crop keeps every pixel; a small
object's badge (18-23 px) is then under one image token wide, and only a magnified crop spreads
it over several. ``bench/bench_vision_probe.py`` measures both
claims with probes trained on the processor's own views. Coarse questions (a colour, a shape,
a count, a side) need only the full view.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 672
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (225, 45, 45),
    "green": (45, 190, 70),
    "blue": (65, 105, 245),
    "yellow": (230, 215, 45),
    "magenta": (215, 60, 215),
    "cyan": (45, 210, 215),
}
SIZES = {"small": (60, 76), "large": (120, 168)}  # side in canvas pixels, low..high
PERIOD = 3  # canvas pixels between lines
CODES = ("horizontal", "vertical", "rising", "falling")
SIDES = ("left", "right")
COUNTS = ("0", "1", "2", "3", "4")
BADGE = {"small": 0.3, "large": 0.5}  # badge side as a share of the object's side
LINE_INK = (250, 250, 250)
READ_SIDE = 28  # view pixels a badge needs: one image token of the family
MARGIN = 6  # least gap between two objects, canvas pixels
CLOSE_GAP = (4, 14)  # a close distractor's gap to the target
SPLITS = ("train", "eval", "align")
COARSE_TYPES = ("colour", "shape", "count", "side")


@dataclass(frozen=True)
class Thing:
    """One object: its looks, its code and where it is (pixels of the canvas)."""

    shape: str
    colour: str
    size: str
    code: str
    x: int  # top-left corner
    y: int
    side: int
    phase: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.side, self.y + self.side)

    @property
    def badge(self) -> tuple[int, int, int, int]:
        half = round(self.side * BADGE[self.size] / 2)
        cx, cy = self.x + self.side // 2, self.y + self.side // 2
        if self.shape == "triangle":  # the badge sits in the triangle's wide lower part
            cy = self.y + round(self.side * 0.62)
        if self.shape in ("triangle", "diamond"):
            half = min(half, round(self.side * 0.2))
        return (cx - half, cy - half, cx + half, cy + half)

    def looks(self) -> tuple[str, str, str]:
        return (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    things: tuple[Thing, ...]
    background: tuple[int, int, int]
    noise_seed: int

    def render(self) -> Image.Image:
        """The scene's picture (drawn once per scene: every chain of a question shares it)."""
        return _rendered(self).copy()


@functools.lru_cache(maxsize=8)
def _rendered(scene: Scene) -> Image.Image:
    image = Image.new("RGB", (CANVAS, CANVAS), scene.background)
    draw = ImageDraw.Draw(image)
    for t in scene.things:
        _draw_shape(draw, t)
    pixels = np.asarray(image).copy()
    for t in scene.things:
        x0, y0, x1, y1 = t.badge
        pixels[y0:y1, x0:x1][line_mask(t.code, y1 - y0, PERIOD, t.phase)] = LINE_INK
    noise = np.random.default_rng(scene.noise_seed).integers(-6, 7, pixels.shape, np.int16)
    noise += pixels
    return Image.fromarray(np.clip(noise, 0, 255, out=noise).astype(np.uint8))


@dataclass(frozen=True)
class Question:
    kind: str  # "fine" or "coarse"
    text: str
    answer: str
    target: Thing
    description: str  # "the small red triangle"
    choices: tuple[str, ...]


def line_mask(code: str, side: int, period: int, phase: int) -> np.ndarray:
    """One pixel-wide lines every ``period`` pixels in the code's orientation."""
    y, x = np.mgrid[0:side, 0:side]
    value = {"horizontal": y, "vertical": x, "rising": x + y, "falling": x - y}[code]
    return (value + phase) % period == 0


def _draw_shape(draw: ImageDraw.ImageDraw, t: Thing) -> None:
    x0, y0, x1, y1 = t.box
    colour = COLOURS[t.colour]
    if t.shape == "circle":
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=colour)
    elif t.shape == "square":
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=colour)
    elif t.shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour)
    else:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        draw.polygon([(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)], fill=colour)


def scene_rng(seed: int, split: str, index: int) -> random.Random:
    """Each (seed, split, index) draws its own scene: splits never share one."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    return random.Random(f"objects-{seed}-{split}-{index}")


def _free(box, placed, margin: int) -> bool:
    return all(
        box[2] + margin <= b[0] or b[2] + margin <= box[0]
        or box[3] + margin <= b[1] or b[3] + margin <= box[1]
        for b in placed
    )


def _thing(rng: random.Random, looks: tuple[str, str, str], x: int, y: int, side: int) -> Thing:
    size, colour, shape = looks
    return Thing(shape, colour, size, rng.choice(CODES), x, y, side, rng.randrange(6))


def make_scene(rng: random.Random, n_things: tuple[int, int] = (4, 7), close: float = 0.3) -> Scene:
    """Objects with distinct looks; the first shares a look with another, and with probability
    ``close`` the second sits right beside it."""
    n = rng.randint(*n_things)
    all_looks = [(s, c, h) for s in SIZES for c in COLOURS for h in SHAPES]
    looks = rng.sample(all_looks, n)
    sharing = [lk for lk in all_looks if lk != looks[0] and lk not in looks
               and sum(a == b for a, b in zip(lk, looks[0], strict=True)) == 2]
    shared = [sum(a == b for a, b in zip(lk, looks[0], strict=True)) for lk in looks[1:]]
    if len(looks) > 1 and sharing and 2 not in shared:
        looks[1] = rng.choice(sharing)
    things, boxes = [], []
    for i, lk in enumerate(looks):
        side = rng.randint(*SIZES[lk[0]])
        for _ in range(200):
            if i == 1 and rng.random() < close and things:
                x, y = _beside(rng, things[0].box, side)
            else:
                x, y = rng.randint(0, CANVAS - side), rng.randint(0, CANVAS - side)
            box = (x, y, x + side, y + side)
            if 0 <= x <= CANVAS - side and 0 <= y <= CANVAS - side and _free(box, boxes, MARGIN):
                things.append(_thing(rng, lk, x, y, side))
                boxes.append(box)
                break
    shade = rng.randint(14, 40)
    return Scene(tuple(things), (shade, shade, shade + rng.randint(0, 10)), rng.randrange(2**31))


def _beside(rng: random.Random, box, side: int) -> tuple[int, int]:
    gap = rng.randint(*CLOSE_GAP)
    where = rng.choice(("left", "right", "above", "below"))
    x = {"left": box[0] - gap - side, "right": box[2] + gap}.get(where, box[0])
    y = {"above": box[1] - gap - side, "below": box[3] + gap}.get(where, box[1])
    if where in ("left", "right"):
        y = box[1] + rng.randint(-side // 3, side // 3)
    else:
        x = box[0] + rng.randint(-side // 3, side // 3)
    return x, y


def describe(scene: Scene, target: Thing) -> str:
    """The shortest unique description with the shape: colour + shape, size + shape, or all."""
    for keep in ((1, 2), (0, 2), (0, 1, 2)):
        words = [target.looks()[k] for k in keep]
        same = [t for t in scene.things if all(t.looks()[k] == target.looks()[k] for k in keep)]
        if len(same) == 1:
            return "the " + " ".join(words)
    raise AssertionError("looks are unique within a scene")


def ask(scene: Scene, kind: str, rng: random.Random) -> Question:
    target = scene.things[0] if rng.random() < 0.5 else rng.choice(scene.things)
    description = describe(scene, target)
    if kind == "fine":
        return Question(kind, f"Which way do the lines on {description} run?", target.code,
                        target, description, CODES)
    if kind != "coarse":
        raise ValueError(f"unknown question kind {kind!r}")
    what = rng.choice(COARSE_TYPES)
    if what == "colour":
        by_shape = f"the {target.size} {target.shape}"
        if sum(t.size == target.size and t.shape == target.shape for t in scene.things) == 1:
            return Question(kind, f"What colour is {by_shape}?", target.colour, target,
                            by_shape, tuple(COLOURS))
    if what == "shape":
        by_colour = f"the {target.size} {target.colour} object"
        if sum(t.size == target.size and t.colour == target.colour for t in scene.things) == 1:
            return Question(kind, f"What shape is {by_colour}?", target.shape, target,
                            by_colour, SHAPES)
    if what == "count":
        n = sum(t.colour == target.colour for t in scene.things)
        return Question(kind, f"How many {target.colour} objects are there?", str(n), target,
                        f"the {target.colour} objects", COUNTS)
    centre = (target.x + target.side / 2) / CANVAS
    side = "left" if centre < 0.5 else "right"
    return Question(kind, f"Is {description} on the left or the right?", side, target,
                    description, SIDES)


def questions(seed: int, split: str, n: int, kind: str) -> list[tuple[Scene, Question]]:
    """``n`` (scene, question) pairs of one kind, a fresh scene each."""
    out = []
    for i in range(n):
        rng = scene_rng(seed, split, i if kind == "fine" else 1_000_000 + i)
        scene = make_scene(rng)
        out.append((scene, ask(scene, kind, rng)))
    return out


def readable(thing: Thing, region: tuple[float, ...], scale: float) -> bool:
    """Whether a view of ``region`` at ``scale`` view pixels per canvas pixel shows the code to
    the chain writer: the whole badge inside, at least one image token (28 px) wide. A large
    object's badge is that wide in a native crop, a small one's only magnified."""
    side = thing.badge[2] - thing.badge[0]
    return contains_badge(thing, region) and side * scale >= READ_SIDE - 1e-9


def contains_badge(thing: Thing, region: tuple[float, ...]) -> bool:
    x0, y0, x1, y1 = thing.badge
    return region[0] <= x0 and region[1] <= y0 and region[2] >= x1 and region[3] >= y1


def others_in(scene: Scene, region: tuple[float, ...], target: Thing) -> list[Thing]:
    """Objects besides ``target`` whose badge a view of ``region`` also shows whole."""
    return [t for t in scene.things if t is not target and contains_badge(t, region)]
