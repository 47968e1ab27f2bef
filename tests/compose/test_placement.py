"""Placement per model: a device-mapped, disk-offloaded large term composes exactly like the
plain one; bad devices and maps are clear errors; a 70B map is planned on the meta device."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import llama, make_tokenizer, save
from typer.testing import CliRunner

from emulate import Composition
from emulate.cli import app
from emulate.common.errors import PlacementError
from emulate.server.config import ConfigError, parse_config

PROMPTS = ["The quick", "Où est la gare?", "Numbers 0123456789", "a"]
# The large model's layers split between the CPU and the disk (read from the checkpoint at
# every forward): the split and offloaded path of a real multi-GPU map, on this machine.
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.layers.2": "disk", "model.layers.3": "cpu", "model.norm": "disk",
         "model.rotary_emb": "cpu", "lm_head": "disk"}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    return {
        "large": save(llama(vocab, hidden=64, layers=4, seed=1), tokenizer, root / "large"),
        "chat": save(llama(vocab, seed=2), tokenizer, root / "chat"),
        "small": save(llama(vocab, seed=3), tokenizer, root / "small"),
    }


def upscaled(paths, **kwargs) -> Composition:
    return Composition("large + chat - small", paths, templates={"chat": "chat"}, **kwargs)


@pytest.fixture(scope="module")
def plain(paths):
    return upscaled(paths)


@pytest.mark.parametrize("large", [
    {"device_map": SPLIT},
    {"device_map": "auto", "max_memory": {"cpu": "250KB"}},  # a small budget forces offload
], ids=["explicit", "auto"])
def test_offloaded_large_term_composes_like_the_plain_one(paths, plain, large, tmp_path):
    mapped = upscaled(paths, placements={"large": {**large, "offload_folder": str(tmp_path)}})
    model = mapped.loaded["large"].model
    assert "disk" in set(model.hf_device_map.values())
    assert any(p.device.type == "meta" for p in model.parameters())  # not in memory
    delta = (mapped.next_token_logprobs(PROMPTS) - plain.next_token_logprobs(PROMPTS)).abs()
    assert float(delta.max()) < 1e-4
    greedy = plain.generate(PROMPTS[:2], max_new_tokens=6, temperature=0)
    assert mapped.generate(PROMPTS[:2], max_new_tokens=6, temperature=0) == greedy
    if "max_memory" not in large:  # decoding paths once (each offloaded forward reads the disk)
        assert mapped.generate(PROMPTS[:2], max_new_tokens=6, temperature=0,
                               speculative=True) == greedy
        sampled = dict(max_new_tokens=6, temperature=1.0, seed=7)
        assert mapped.generate(PROMPTS[:2], **sampled) == plain.generate(PROMPTS[:2], **sampled)


def test_a_dtype_per_model_and_a_shared_checkpoint_loaded_once(paths, plain):
    twice = {**paths, "large_again": paths["large"]}
    mixed = Composition("large + chat - small + 0*large_again", twice, templates={"chat": "chat"},
                        placements={"small": {"dtype": "float64"}, "large": "cpu"})
    assert mixed.loaded["small"].model.dtype == torch.float64
    assert mixed.model_key("large_again") == "large" and "large_again" not in mixed.loaded
    delta = (mixed.next_token_logprobs(PROMPTS) - plain.next_token_logprobs(PROMPTS)).abs()
    assert float(delta.max()) < 1e-4


@pytest.mark.parametrize("placements, message", [
    ({"large": "cuda:7"}, "'cuda:7' does not exist"),
    ({"large": {"device": "tpu"}}, "not a device"),
    ({"large": {"device": 3.5}}, "must be a device"),
    ({"large": "everywhere"}, "not a device"),
    ({"large": {"device_map": "everywhere"}}, "is not one of auto"),
    ({"large": {"device_map": {"model.nothing": "cpu", "": "cpu"}}}, "names no module"),
    ({"large": {"device_map": {"model.embed_tokens": "cpu"}}}, "places no module holding"),
    ({"large": {"device_map": {"": "cuda:3"}}}, "does not exist"),
    ({"large": {"device_map": {}}}, "empty"),
    ({"large": {"device_map": "auto", "max_memory": {"cpu": "lots"}}}, "is not a size"),
    ({"large": {"device_map": "auto", "max_memory": {5: "1GiB"}}}, "does not exist"),
    ({"large": {"device_map": "auto", "max_memory": "1GiB"}}, "must be a mapping"),
    ({"large": {"max_memory": {"cpu": "1GiB"}}}, "need a device_map"),
    ({"large": {"device": "cpu", "device_map": "auto"}}, "not both"),
    ({"large": {"dtype": "float8"}}, "unknown dtype"),
    ({"large": {"devise": "cpu"}}, "unknown key"),
    ({"large": 5}, "must be a device"),
    ({"huge": "cpu"}, "name no model"),
    ("auto", "must be a mapping model name"),
], ids=lambda v: str(v)[:40])
def test_bad_placements_are_clear_errors(paths, placements, message):
    with pytest.raises(PlacementError, match=message):
        upscaled(paths, placements=placements)


def test_bad_composition_device_and_conflicting_shared_placements(paths):
    with pytest.raises(PlacementError, match="does not exist"):
        upscaled(paths, device="cuda:0")
    with pytest.raises(PlacementError, match="share one checkpoint"):
        Composition("a - b", {"a": paths["large"], "b": paths["large"]},
                    placements={"a": "cpu", "b": {"dtype": "float64"}})
    model = llama(300)
    with pytest.raises(PlacementError, match="applies to a checkpoint loaded by path"):
        Composition("m", {"m": (model, make_tokenizer())}, placements={"m": "auto"})


def cli(paths, *extra):
    return ["generate", "--formula", "large + chat - small", "--template", "chat=chat",
            *[f"--model={n}={p}" for n, p in paths.items()], "--temperature", "0",
            "--max-new-tokens", "6", *extra, "The quick"]


def test_the_command_line_places_models(paths, plain, tmp_path):
    result = CliRunner().invoke(app, cli(paths, "--device-map", "large=auto", "--max-memory",
                                         "large=cpu:250KB", "--offload-folder",
                                         f"large={tmp_path}", "--dtype", "small=float64"))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == plain.generate(["The quick"], max_new_tokens=6,
                                                   temperature=0)[0].strip()
    for extra, message in ((["--device", "cuda:5"], "does not exist"),
                           (["--device-map", "large"], "NAME=DEVICE_MAP"),
                           (["--max-memory", "large=lots"], "DEVICE:SIZE"),
                           (["--dtype", "large=int3"], "unknown dtype")):
        result = CliRunner().invoke(app, cli(paths, *extra))
        assert result.exit_code == 2 and message in " ".join(result.output.split()), extra


def test_the_server_config_takes_placements():
    body = {"models": {"big": {"path": "/m/big", "device_map": "auto", "dtype": "bfloat16",
                               "max_memory": {0: "70GiB", 1: "70GiB", "cpu": "100GiB"}}},
            "compositions": {"x": {"formula": "big", "terms": {"big": "big"}}}}
    config = parse_config(body)
    assert config.placements["/m/big"]["device_map"] == "auto"
    for bad, message in (({"device_map": "wide"}, "models.big"),
                         ({"max_memory": {"gpu": "1GiB"}, "device_map": "auto"}, "models.big"),
                         ({"device_map": "auto"}, r"models\.big\.path")):
        entry = {"path": "/m/big", **bad} if "path" not in message else bad
        with pytest.raises(ConfigError, match=message):
            parse_config({**body, "models": {"big": entry}})


def test_a_70b_map_over_four_80gb_gpus_is_planned_on_the_meta_device():
    """Llama-2-70B's config (examples/): 69 B parameters, 128.5 GiB in bfloat16, split whole
    decoder layers over four 80 GiB devices; over two of 60 GiB part goes to disk."""
    from pathlib import Path

    config = Path(__file__).parents[2] / "examples" / "llama-2-70b"
    result = CliRunner().invoke(app, ["placement", str(config), "--max-memory",
                                      "0:80GiB,1:80GiB,2:80GiB,3:80GiB", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["fits"] and set(plan["device_map"].values()) == {0, 1, 2, 3}
    sizes = plan["bytes_per_device"]
    assert all(size <= 80 * 2**30 for size in sizes.values())
    assert 128 * 2**30 < sum(sizes.values()) < 129 * 2**30
    from emulate.compose.placement_plan import plan_device_map

    tight = plan_device_map(config, {0: "60GiB", 1: "60GiB"})
    assert not tight.fits and "disk" in tight.bytes_per_device
    result = CliRunner().invoke(app, ["placement", str(config), "--max-memory",
                                      "0:80GiB,1:bogus"])
    assert result.exit_code == 2 and "is not a size" in result.output


@pytest.mark.parametrize("max_memory", [{"cpu": "250KB"}, {"cpu": "1KB"}], ids=["split", "disk"])
def test_a_model_placed_by_accelerate_is_used_where_it_is(paths, plain, max_memory, tmp_path):
    """`from_pretrained(device_map="auto", offload_folder=...)` as a user loads a 70B: the model
    object composes in place (never moved, which accelerate refuses for offloaded modules)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        paths["large"], device_map="auto", max_memory=max_memory, offload_folder=str(tmp_path))
    where = dict(model.hf_device_map)
    assert "disk" in where.values()
    placed = upscaled({**paths, "large": model}, dtype="float32")
    assert placed.loaded["large"].model is model and model.hf_device_map == where
    assert any(p.device.type == "meta" for p in model.parameters())
    delta = (placed.next_token_logprobs(PROMPTS) - plain.next_token_logprobs(PROMPTS)).abs()
    assert float(delta.max()) < 1e-4
    with pytest.raises(PlacementError, match="already placed"):
        upscaled({**paths, "large": model}, placements={"large": "cpu"})
