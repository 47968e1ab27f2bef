"""Tiny random checkpoints of the three real families and a micro world, built once per test
session."""

from __future__ import annotations

import pytest
from tiny_vlms import tiny_llava, tiny_qwen2_5_vl, tiny_qwen2_vl


@pytest.fixture(scope="session")
def qwen25_checkpoint(tmp_path_factory):
    """Folder of a random Qwen2.5-VL with its processor."""
    return tiny_qwen2_5_vl(tmp_path_factory.mktemp("qwen2_5_vl"))


@pytest.fixture(scope="session")
def qwen2_checkpoint(tmp_path_factory):
    """Folder of a random Qwen2-VL with its processor."""
    return tiny_qwen2_vl(tmp_path_factory.mktemp("qwen2_vl"))


@pytest.fixture(scope="session")
def llava_checkpoint(tmp_path_factory):
    """Folder of a random Llava-1.5-style checkpoint with its processor."""
    return tiny_llava(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="session")
def micro_vision(tmp_path_factory):
    """A built micro vision world (both members), shared by every test that needs one."""
    from emulate.vision.build import build_world

    return build_world(tmp_path_factory.mktemp("vision") / "micro", "micro", 0, progress=False)


@pytest.fixture(scope="session")
def micro_chains(tmp_path_factory):
    """Verified chains of 12 questions (the micro world's recipes), as `synth` writes them."""
    from emulate.vision.dataset import synthesize_dataset

    out = tmp_path_factory.mktemp("chains")
    synthesize_dataset(0, 12, out)
    return out


@pytest.fixture(scope="session")
def micro_objects(tmp_path_factory):
    """A built micro objects world: chains, the aligned Qwen2.5-VL family, both members."""
    from emulate.vision.build import build_world

    folder = tmp_path_factory.mktemp("objects") / "micro"
    return build_world(folder, "micro", 0, progress=False, world="objects")
