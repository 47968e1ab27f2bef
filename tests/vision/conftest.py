"""Tiny random checkpoints of the three real families, built once per test session."""

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
