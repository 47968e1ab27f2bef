"""The micro world through the command line: build (cached), eval JSON, ask, bad input."""

import json

import pytest
from typer.testing import CliRunner

from emulate.cli import app

runner = CliRunner()
KEYS = {"accuracy", "chance", "valid_calls", "containment", "calls_per_question",
        "without_calls", "answered", "box_iou50", "n"}


def test_a_second_build_trains_nothing(micro_vision, monkeypatch):
    import emulate.vision.train as train

    monkeypatch.setattr(train, "train", lambda *a, **k: pytest.fail("trained again"))
    result = runner.invoke(app, ["vision", "build", "--out", str(micro_vision), "--size", "micro"])
    assert result.exit_code == 0 and result.stdout.strip().endswith(str(micro_vision))


def test_eval_prints_the_metrics_of_both_kinds(micro_vision):
    args = ["vision", "eval", "--world", str(micro_vision), "--member", "tools", "--mode",
            "withheld", "--json", "--n", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert set(metrics) == {"fine", "coarse"} and set(metrics["fine"]) == KEYS
    assert metrics["fine"]["n"] == 3 and metrics["fine"]["chance"] == 0.25


def test_ask_prints_a_trace_and_saves_observations(micro_vision, tmp_path):
    from emulate.vision.scenes import make_scene, scene_rng

    image = tmp_path / "scene.png"
    make_scene(scene_rng(0, "eval", 0)).render().save(image)
    save = tmp_path / "seen"
    result = runner.invoke(app, ["vision", "ask", "--world", str(micro_vision), "--image",
                                 str(image), "--save", str(save), "What code is on the red tile?"])
    assert result.exit_code == 0, result.output
    assert "answer:" in result.stdout and (save / "observation-0.png").exists()


@pytest.mark.parametrize("case", ["missing", "not_image", "bomb", "empty_question"])
def test_bad_input_is_one_clear_error(micro_vision, tmp_path, case):
    from PIL import Image
    from test_vision_images import png_header

    image, question = tmp_path / "x.png", "What code is on the red tile?"
    if case == "not_image":
        image.write_text("not an image")
    elif case == "bomb":  # a 69-byte PNG whose header claims 20000 x 20000 pixels
        png_header(image, 20000, 20000)
    elif case == "empty_question":
        Image.new("RGB", (64, 64)).save(image)
        question = "  "
    result = runner.invoke(app, ["vision", "ask", "--world", str(micro_vision), "--image",
                                 str(image), question])
    assert result.exit_code == 2 and "error:" in result.output
    assert "Traceback" not in result.output


def test_a_directory_without_a_world_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["vision", "eval", "--world", str(tmp_path), "--json"])
    assert result.exit_code == 2 and "no built vision world" in " ".join(result.output.split())


def test_ablation_trains_and_evaluates_each_variant_then_caches(micro_vision, monkeypatch):
    args = ["vision", "ablate", "--world", str(micro_vision), "--json", "--n", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)  # the bars go to stderr: stdout is the JSON alone
    assert list(table) == ["focus_area", "zoom_in", "reuse", "all"]
    assert all(set(table[v]["fine"]) == KEYS and table[v]["coarse"]["n"] == 1 for v in table)
    assert (micro_vision / "ablation" / "reuse" / "config.json").exists()
    assert (micro_vision / "ablation.png").exists()

    import emulate.vision.ablation as ablation

    monkeypatch.setattr(ablation, "run_jobs", lambda *a, **k: pytest.fail("ran again"))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout) == table


def test_every_chain_reply_fits_in_one_generated_turn(micro_vision):
    from transformers import AutoProcessor

    from emulate.vision.adapters import MAX_NEW_TOKENS
    from emulate.vision.dataset import load_chains

    tokenizer = AutoProcessor.from_pretrained(micro_vision / "tools").tokenizer
    replies = [m["content"][0]["text"] for chain in load_chains(micro_vision / "chains")["messages"]
               for m in chain if m["role"] == "assistant"]
    longest = max(len(tokenizer.encode(r, add_special_tokens=False)) for r in replies)
    assert longest <= MAX_NEW_TOKENS
