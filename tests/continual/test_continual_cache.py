"""A continual world loads only when its universe and CLIP are whole, else names what is gone."""

from __future__ import annotations

import shutil

import pytest

from emulate.continual.pretrain import WorldMissingError, load_world


@pytest.mark.parametrize("damaged", ["universe.json", "clip/model.safetensors"])
def test_a_deleted_file_is_named_with_the_command_that_rebuilds(continual_world, tmp_path,
                                                                damaged):
    copy = shutil.copytree(continual_world, tmp_path / "micro")
    assert load_world(copy).manifest["files"][damaged]["size"] > 0
    (copy / damaged).unlink()
    with pytest.raises(WorldMissingError) as error:
        load_world(copy)
    assert f"{damaged} is missing" in str(error.value)
    assert f"emulate continual build --out {copy} --size micro --seed 0" in str(error.value)
