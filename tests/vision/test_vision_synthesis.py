"""Chain synthesis: every kept chain re-verifies; rejections are counted; the dataset loads."""

import json
import random

import pytest

from emulate.vision.dataset import load_chains, member_rows, synthesize_dataset
from emulate.vision.runtime import run
from emulate.vision.scenes import place, questions
from emulate.vision.synthesis import FINE_RECIPES, annotator, conversation, synthesize, verify


def test_recipes_execute_and_verify():
    scene, question = questions(0, "train", 1, "fine")[0]
    outcomes = {r: synthesize(scene, question, r, random.Random(1)) for r in FINE_RECIPES}
    kept = [synthesize(scene, question, "focus_area", random.Random(i)) for i in range(10)]
    reasons = {reason for _, reason in kept}
    assert None in reasons and reasons <= {None, "not_contained", "malformed_call"}
    trace = next(t for t, reason in kept if reason is None)
    assert trace.answer == question.answer and len(trace.observations) == 2
    recovery, reason = outcomes["recovery-all"]
    assert reason is None and [s.call["name"] for s in recovery.calls] == [
        "focus_area", "reuse", "focus_area"
    ]


def test_every_call_follows_the_place_of_the_tile_it_looks_for():
    calls = 0
    for scene, question in questions(0, "train", 6, "fine"):
        for recipe in FINE_RECIPES:
            trace, reason = synthesize(scene, question, recipe, random.Random(recipe))
            for step in trace.steps if reason is None else []:
                if step.call is not None:
                    assert place(question.target) in step.reply.split("<tool_call>")[0]
                    calls += 1
    assert calls > 20


def test_a_wrong_crop_is_rejected_as_not_contained():
    scene, question = questions(0, "train", 1, "fine")[0]
    generate = annotator(scene, question, "recovery-focus_area", random.Random(0))
    trace = run(lambda m, o: generate(m, o) if len(m) < 2 else "<answer>rows</answer>",
                scene.render(), question.text)
    assert verify(trace, question) == "not_contained"


def test_dataset_has_images_messages_and_stats(tmp_path):
    stats = synthesize_dataset(0, 16, tmp_path)
    assert stats["generated"] == 8 * len(FINE_RECIPES) + 8
    assert stats["kept"] + stats["rejected"] == stats["generated"] > stats["kept"] > 0
    assert json.loads((tmp_path / "stats.json").read_text()) == stats
    chains = load_chains(tmp_path)
    row = chains[0]
    assert row["images"][0].size == (128, 128)
    n_images = sum(p["type"] == "image" for m in row["messages"] for p in m["content"])
    assert n_images == len(row["images"])
    direct = member_rows(chains, "direct", 0)
    assert {chains[i]["recipe"] for i in direct} == {"direct"}
    tools = [chains[i] for i in member_rows(chains, "all", 0)]
    assert {r["recipe"] for r in tools if r["kind"] == "coarse"} == {"direct"}
    assert {r["recipe"] for r in tools if r["kind"] == "fine"} <= {
        "focus_area", "zoom_in", "recovery-all", "repair-focus_area", "repair-zoom_in"
    }
    repairs = [r for r in chains if r["recipe"].startswith("repair-")]
    assert repairs and all(r["skip_turns"] == [0] for r in repairs)


@pytest.mark.parametrize("tool", ["focus_area", "zoom_in"])
def test_a_repair_chain_reads_the_error_of_its_broken_call_and_calls_again(tool):
    scene, question = questions(0, "train", 1, "fine")[0]
    for index in range(6):  # both ways of breaking a call
        trace, reason = synthesize(scene, question, f"repair-{tool}", random.Random(index))
        assert reason is None and trace.answer == question.answer
        assert trace.steps[0].error.startswith("error: ") and trace.steps[0].observation is None
        assert trace.steps[1].call["name"] == tool and trace.steps[1].error is None
        messages = conversation(trace)
        assert messages[2] == {"role": "user", "content": [{"type": "text",
                                                             "text": trace.steps[0].error}]}
    plain, _ = synthesize(scene, question, tool, random.Random(0))
    assert verify(plain, question, allowed_errors=1) == "malformed_call"  # no mistake to repair
