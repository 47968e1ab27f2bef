"""Shared fixtures: the micro toy world, built once per test session; one torch thread."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory):
    """Path of a built ``micro`` world (six tiny checkpoints, facts and splits)."""
    from emulate.world import build_world

    return build_world(
        tmp_path_factory.mktemp("world") / "micro", size="micro", seed=0, progress=False
    )


@pytest.fixture(scope="module")
def one_thread():
    """A module's tests on one torch thread (``pytestmark = pytest.mark.usefixtures(...)``)."""
    from speculative_setup import single_thread

    with single_thread():
        yield
