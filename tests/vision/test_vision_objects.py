"""The objects world: what it guarantees about perception, questions and chains."""

import dataclasses
import random
import re

import numpy as np
import pytest
from PIL import Image

from emulate.vision import object_chains, objects
from emulate.vision.evaluate import box_iou
from emulate.vision.objects import CODES, make_scene, questions, scene_rng
from emulate.vision.runtime import WITHHELD

SCENES = [make_scene(scene_rng(0, "train", i)) for i in range(12)]


def with_code(scene, index, code):
    things = list(scene.things)
    things[index] = dataclasses.replace(things[index], code=code)
    return dataclasses.replace(scene, things=tuple(things)).render()


def test_codes_vanish_in_the_full_view_and_show_in_a_crop():
    """At the family's full view (672 -> 224, the processor's bicubic) the four codes of one
    badge give nearly the same pixels; at native resolution they differ in most of the badge."""
    for scene in SCENES[:6]:
        for index, thing in enumerate(scene.things):
            x0, y0, x1, y1 = thing.badge
            renders = [np.asarray(with_code(scene, index, c)).astype(float) for c in CODES]
            small = [np.asarray(Image.fromarray(r.astype(np.uint8)).resize((224, 224),
                     Image.BICUBIC)).astype(float)[y0 // 3 - 1 : y1 // 3 + 2,
                                                   x0 // 3 - 1 : x1 // 3 + 2] for r in renders]
            native = [r[y0:y1, x0:x1] for r in renders]
            for a in range(4):
                for b in range(a + 1, 4):
                    assert np.abs(small[a] - small[b]).mean() < 8
                    assert (np.abs(native[a] - native[b]).max(-1) > 100).mean() > 0.3


def test_objects_never_overlap_and_looks_are_unique():
    for scene in SCENES:
        boxes = [t.box for t in scene.things]
        assert len(boxes) >= 4
        for i, a in enumerate(boxes):
            assert 0 <= a[0] and a[2] <= objects.CANVAS and 0 <= a[1] and a[3] <= objects.CANVAS
            for b in boxes[i + 1 :]:
                assert box_iou(a, b) == 0
        assert len({t.looks() for t in scene.things}) == len(scene.things)


def test_questions_name_looks_never_places_and_their_answers_hold():
    for kind in ("fine", "coarse"):
        for scene, question in questions(3, "eval", 40, kind):
            assert not re.search(r"row|column|\d", question.text)
            target = question.target
            assert question.answer in question.choices
            if kind == "fine":
                assert question.answer == target.code
                assert objects.describe(scene, target) == question.description
            elif question.text.startswith("How many"):
                assert int(question.answer) == sum(t.colour == target.colour for t in scene.things)
            elif question.text.startswith("What colour"):
                assert question.answer == target.colour
            elif question.text.startswith("What shape"):
                assert question.answer == target.shape


def test_splits_draw_different_scenes():
    train = [s for s, _ in questions(0, "train", 5, "fine")]
    held_out = [s for s, _ in questions(0, "eval", 5, "fine")]
    boxes = [{t.box for s in split for t in s.things} for split in (train, held_out)]
    assert not boxes[0] & boxes[1]


@pytest.mark.parametrize("recipe", object_chains.FINE_RECIPES)
def test_every_recipe_verifies_and_its_last_look_is_the_target(recipe):
    kept = 0
    for index, (scene, question) in enumerate(questions(0, "train", 12, "fine")):
        trace, why = object_chains.synthesize(scene, question, recipe, random.Random(index))
        if why == "no_look_alike":
            continue
        assert why is None, (recipe, why, [s.reply for s in trace.steps])
        kept += 1
        if recipe in ("direct", "withheld"):
            continue
        last = trace.observations[trace.steps[-2].observation].region
        assert objects.contains_badge(question.target, last)
        if recipe != "recovery-loose":  # a loose look that shows the badge well is read as is
            assert box_iou(last, question.target.box) >= 0.5
        assert trace.answer == question.target.code
    assert kept >= 8


def test_tight_boxes_come_from_the_true_extent_and_small_targets_are_magnified():
    tried_small = 0
    for index, (scene, question) in enumerate(questions(1, "train", 30, "fine")):
        trace, _ = object_chains.synthesize(scene, question, "focus_area", random.Random(index))
        first = trace.observations[trace.steps[0].observation].region
        assert box_iou(first, question.target.box) >= 0.75  # PAD 4 on a 60 px side: 0.78
        tools = [s.call["name"] for s in trace.calls]
        if question.target.size == "small":
            tried_small += 1
            assert tools == ["focus_area", "zoom_in"]
        else:
            assert tools == ["focus_area"]
    assert tried_small >= 3


def test_withheld_chains_guess_instead_of_derailing():
    answers = []
    for index, (scene, question) in enumerate(questions(0, "train", 20, "fine")):
        trace, why = object_chains.synthesize(scene, question, "withheld", random.Random(index))
        assert why is None and trace.steps[0].error == WITHHELD
        answers.append(trace.answer)
    assert set(answers) <= set(CODES) and len(set(answers)) >= 3


def test_chains_written_in_parts_equal_chains_written_at_once(tmp_path, monkeypatch):
    from emulate.vision import dataset

    whole = dataset.synthesize_dataset(1, 6, tmp_path / "whole", world="objects")
    monkeypatch.setattr(dataset, "CHUNK_ROWS", 7)
    parts = dataset.synthesize_dataset(1, 6, tmp_path / "parts", world="objects")
    assert whole == parts
    a, b = dataset.load_chains(tmp_path / "whole"), dataset.load_chains(tmp_path / "parts")
    assert len(a) == len(b) > 14 and a["messages"] == b["messages"]
    assert a["recipe"] == b["recipe"]
    assert a[-1]["images"][0].tobytes() == b[-1]["images"][0].tobytes()
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["dataset", "stats.json"]
