"""The micro continual world, built once per test session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def continual_world(tmp_path_factory):
    from emulate.continual.pretrain import build_world

    torch.set_num_threads(1)
    home = tmp_path_factory.mktemp("home")  # laid out as the cache: the demo finds it there
    return build_world(home / "continual" / "micro-seed0", "micro", 0, progress=False)


@pytest.fixture(scope="session")
def continual_data(continual_world):
    from emulate.continual.pretrain import load_world
    from emulate.continual.stream import Data

    world = load_world(continual_world)
    return world, Data(world)
