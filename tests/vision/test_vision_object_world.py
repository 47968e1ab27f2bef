"""The objects world end to end at micro size: build, the members' format, eval, synth."""

import json

from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor
from typer.testing import CliRunner

from emulate.cli import app
from emulate.vision.build import load_world
from emulate.vision.dataset import chains_world, load_chains
from emulate.vision.qwen_family import image_tokens


def test_members_are_qwen2_5_vl_checkpoints_whose_zoom_is_a_richer_input(micro_objects):
    manifest = load_world(micro_objects)
    assert manifest["world"] == "objects" and set(manifest["losses"]) == {"aligned", "direct",
                                                                          "tools"}
    for member in ("direct", "tools"):
        model = AutoModelForImageTextToText.from_pretrained(micro_objects / member)
        assert model.config.model_type == "qwen2_5_vl"
    processor = AutoProcessor.from_pretrained(micro_objects / "tools")
    crop = Image.new("RGB", (56, 56), (200, 40, 40))
    assert image_tokens(processor, crop.resize((224, 224))) >= 4 * image_tokens(processor, crop)
    full = Image.new("RGB", (672, 672))
    assert image_tokens(processor, full) == 64


def test_chains_are_the_objects_worlds_and_members_learn_from_them(micro_objects):
    assert chains_world(micro_objects / "chains") == "objects"
    chains = load_chains(micro_objects / "chains")
    assert {"focus_area", "zoom_in", "withheld", "recovery-wrong"} <= set(chains["recipe"])
    trained = json.loads((micro_objects / "tools" / "emulate_vision.json").read_text())
    assert trained["call_format"] == "grammar" and trained["examples"] > 0


def test_eval_reports_the_issues_keys_for_both_members(micro_objects):
    runner = CliRunner()
    for member in ("direct", "tools"):
        result = runner.invoke(app, ["vision", "eval", "--world", str(micro_objects),
                                     "--member", member, "--n", "2", "--json"])
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.output.strip().splitlines()[-1])
        for kind in ("fine", "coarse"):
            assert {"accuracy", "answered", "box_iou50", "valid_calls"} <= set(metrics[kind])
            assert metrics[kind]["n"] == 2


def test_synth_writes_the_worlds_own_chains(micro_objects, tmp_path):
    result = CliRunner().invoke(app, ["vision", "synth", "--world", str(micro_objects),
                                      "--out", str(tmp_path / "c"), "--n", "4"])
    assert result.exit_code == 0, result.output
    assert chains_world(tmp_path / "c") == "objects"
    assert "withheld" in set(load_chains(tmp_path / "c")["recipe"])
