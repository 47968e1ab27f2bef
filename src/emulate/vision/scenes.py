"""The synthetic fine-grained perception world: tiles on a jittered grid, each with a tiny code.

A scene is a 128x128 canvas (4x the 32-pixel side of the encoder) cut into a 4x4 grid of
32-pixel cells; some cells hold a 24-pixel tile with a colour (unique within the scene) and a
*code*: one of four equal-ink stripe patterns with a period of 4 pixels. Tiles sit at offsets in
steps of 4 pixels, so each 4x4 block the encoder averages holds exactly half ink whatever the
code: downsampled to the encoder's input every code gives the same pixels (``test_vision_scenes``
checks this), while a crop of one cell shows the stripes plainly.

Fine questions ask for the code of the tile in a given row and column (unreadable at the
encoder's resolution); coarse questions ask for its colour (readable). Everything is drawn
from a seeded generator per scene, so attributes change from scene to scene and nothing can be
memorised.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

CANVAS = 128
GRID = 4
CELL = CANVAS // GRID
TILE = 24
STEP = 4  # tile offsets and stripe period share this lattice
ENCODER_SIDE = 32
BACKGROUND = (24, 24, 24)
COLOURS = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (60, 100, 250),
    "yellow": (235, 220, 40),
    "magenta": (220, 50, 220),
    "cyan": (40, 220, 220),
    "orange": (250, 140, 20),
    "white": (240, 240, 240),
}
CODES = ("rows", "columns", "checks", "diagonal")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
SPLITS = ("train", "eval", "align")


@dataclass(frozen=True)
class Tile:
    colour: str
    code: str
    row: int
    col: int
    x: int  # top-left corner on the canvas, pixels
    y: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + TILE, self.y + TILE)

    @property
    def cell_box(self) -> tuple[int, int, int, int]:
        return (self.col * CELL, self.row * CELL, (self.col + 1) * CELL, (self.row + 1) * CELL)

    @property
    def quadrant(self) -> str:
        return QUADRANTS[2 * (self.row >= GRID // 2) + (self.col >= GRID // 2)]


@dataclass(frozen=True)
class Scene:
    tiles: tuple[Tile, ...]

    def tile(self, colour: str) -> Tile:
        return next(t for t in self.tiles if t.colour == colour)

    def at(self, row: int, col: int) -> Tile | None:
        return next((t for t in self.tiles if (t.row, t.col) == (row, col)), None)

    def render(self) -> Image.Image:
        pixels = np.empty((CANVAS, CANVAS, 3), dtype=np.uint8)
        pixels[:] = BACKGROUND
        for t in self.tiles:
            ink = code_mask(t.code)
            pixels[t.y : t.y + TILE, t.x : t.x + TILE][ink] = COLOURS[t.colour]
        return Image.fromarray(pixels)


@dataclass(frozen=True)
class Question:
    kind: str  # "fine" or "coarse"
    text: str
    answer: str
    target: Tile

    @property
    def choices(self) -> tuple[str, ...]:
        return CODES if self.kind == "fine" else tuple(COLOURS)


def code_mask(code: str) -> np.ndarray:
    """The tile's ink: half of every 4x4 block, arranged as the code says."""
    y, x = np.mgrid[0:TILE, 0:TILE]
    half = STEP // 2
    if code == "rows":
        return (y % STEP) < half
    if code == "columns":
        return (x % STEP) < half
    if code == "checks":
        return ((y % STEP) < half) ^ ((x % STEP) < half)
    if code == "diagonal":
        return ((x + y) % STEP) < half
    raise ValueError(f"unknown code {code!r}")


def make_scene(rng: random.Random, n_tiles: tuple[int, int] = (5, 8)) -> Scene:
    cells = rng.sample(range(GRID * GRID), rng.randint(*n_tiles))
    colours = rng.sample(list(COLOURS), len(cells))
    offsets = range(0, CELL - TILE + 1, STEP)
    tiles = []
    for cell, colour in zip(cells, colours, strict=True):
        row, col = divmod(cell, GRID)
        x, y = col * CELL + rng.choice(offsets), row * CELL + rng.choice(offsets)
        tiles.append(Tile(colour, rng.choice(CODES), row, col, x, y))
    return Scene(tuple(tiles))


def scene_rng(seed: int, split: str, index: int) -> random.Random:
    """Each (seed, split, index) draws its own scene: splits never share one."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    return random.Random(f"vision-{seed}-{split}-{index}")


def place(tile: Tile) -> str:
    return f"in row {tile.row + 1}, column {tile.col + 1}"


def ask(scene: Scene, kind: str, rng: random.Random) -> Question:
    target = rng.choice(scene.tiles)
    if kind == "fine":
        return Question(kind, f"What code is on the tile {place(target)}?", target.code, target)
    if kind == "coarse":
        return Question(kind, f"What colour is the tile {place(target)}?", target.colour, target)
    raise ValueError(f"unknown question kind {kind!r}")


def questions(seed: int, split: str, n: int, kind: str) -> list[tuple[Scene, Question]]:
    """``n`` (scene, question) pairs of one kind, a fresh scene each."""
    out = []
    for i in range(n):
        rng = scene_rng(seed, split, i if kind == "fine" else 1_000_000 + i)
        scene = make_scene(rng)
        out.append((scene, ask(scene, kind, rng)))
    return out


def read_code(image: Image.Image, colour: str) -> str | None:
    """The code of the ``colour`` tile in a full-resolution image, or None if it is not there.

    The synthesis pipeline's exact reader: it looks at pixels, so a crop that missed the tile
    (or a view too coarse to show the stripes) reads nothing.
    """
    pixels = np.asarray(image.convert("RGB"))
    ink = np.all(pixels == COLOURS[colour], axis=-1)
    ys, xs = np.nonzero(ink)
    if len(ys) == 0:
        return None
    patch = ink[ys.min() : ys.min() + TILE, xs.min() : xs.min() + TILE]
    if patch.shape != (TILE, TILE):
        return None
    for code in CODES:
        for dy in range(STEP):
            for dx in range(STEP):
                if np.array_equal(patch, np.roll(code_mask(code), (-dy, -dx), axis=(0, 1))):
                    return code
    return None
