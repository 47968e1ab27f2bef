"""Each world kind loads only when every file its manifest lists is whole, else names the damage."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import pytest

from emulate.common.cache import build_key, cached_build


def test_a_text_world_with_a_members_weights_deleted_is_named(micro_world, tmp_path):
    from emulate.world import load_world
    from emulate.world.family import WorldError

    copy = shutil.copytree(micro_world, tmp_path / "micro")
    assert load_world(copy).manifest["files"]
    (copy / "small_helpful" / "model.safetensors").unlink()
    with pytest.raises(WorldError) as error:
        load_world(copy)
    message = str(error.value)
    assert "small_helpful/model.safetensors is missing" in message
    assert f"emulate world build --out {copy} --size micro --seed 0" in message


def test_a_text_world_built_with_other_settings_is_named(micro_world, tmp_path):
    from emulate.world import load_world
    from emulate.world.family import WorldError

    copy = shutil.copytree(micro_world, tmp_path / "micro")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["spec"]["n_people"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WorldError, match=r"n_people \(built 49, now 48\)"):
        load_world(copy)


def vision_folder(out, size="micro"):
    """A folder laid out as a micro vision world, as a manifest of its kind lists it."""
    from emulate.vision.build import SIZES, code_files

    spec = asdict(SIZES["micro"])
    key = build_key({"size": "micro", "seed": 0, "spec": spec}, code_files())

    def fn(folder):
        for member in ("aligned", "direct", "tools"):
            (folder / member).mkdir()
            (folder / member / "model.safetensors").write_bytes(member.encode() * 100)
        return {"size": size, "seed": 0}

    return cached_build(out, "vision", key, spec, fn)


def test_a_vision_world_with_a_members_weights_deleted_is_named(tmp_path):
    from emulate.vision.build import WorldError, load_world

    out = vision_folder(tmp_path / "micro")
    assert load_world(out)["size"] == "micro"
    (out / "tools" / "model.safetensors").unlink()
    with pytest.raises(WorldError, match="tools/model.safetensors is missing"):
        load_world(out)


def test_a_vision_manifest_of_an_unknown_size_is_a_clear_error(tmp_path):
    from emulate.vision.build import WorldError, load_world

    out = vision_folder(tmp_path / "huge", size="huge")
    with pytest.raises(WorldError, match="names size 'huge'.*--size micro"):
        load_world(out)
