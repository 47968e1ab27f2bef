"""The world: seeded, varied, and truly fine (the encoder's view of a code is the same for all)."""

import random
from dataclasses import replace

import numpy as np
from PIL import Image

from emulate.vision.scenes import (
    CODES,
    ENCODER_SIDE,
    Scene,
    make_scene,
    questions,
    read_code,
    scene_rng,
)


def low_res(image):
    return np.asarray(image.resize((ENCODER_SIDE, ENCODER_SIDE), Image.BOX))


def test_scenes_are_seeded_and_splits_differ():
    a = make_scene(scene_rng(0, "train", 3))
    assert a == make_scene(scene_rng(0, "train", 3))
    assert a != make_scene(scene_rng(0, "eval", 3)) and a != make_scene(scene_rng(1, "train", 3))
    colours = [t.colour for t in a.tiles]
    assert len(set(colours)) == len(colours)


def test_every_code_looks_the_same_at_the_encoder_resolution():
    for index in range(20):
        scene = make_scene(scene_rng(0, "train", index))
        views = {
            code: low_res(Scene(tuple(replace(t, code=code) for t in scene.tiles)).render())
            for code in CODES
        }
        assert all(np.array_equal(views[CODES[0]], v) for v in views.values())


def test_a_cell_crop_shows_the_code_and_the_full_view_does_not():
    scene = make_scene(random.Random(5))
    image = scene.render()
    for tile in scene.tiles:
        crop = image.crop(tile.cell_box)
        assert read_code(crop, tile.colour) == tile.code
        assert read_code(Image.fromarray(low_res(image)), tile.colour) is None


def test_questions_are_balanced_enough_and_deterministic():
    fine = questions(0, "eval", 200, "fine")
    assert [q.text for _, q in fine] == [q.text for _, q in questions(0, "eval", 200, "fine")]
    counts = {code: sum(q.answer == code for _, q in fine) for code in CODES}
    assert min(counts.values()) > 30
    coarse = questions(0, "eval", 50, "coarse")
    assert all(q.answer == q.target.colour and q.kind == "coarse" for _, q in coarse)
