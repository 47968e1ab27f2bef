"""The toy world: a seeded world of fictional people and a six-model family trained on it.

    from emulate.world import build_world, load_world, evaluate
    path = build_world(default_world_dir("micro"), size="micro")
    evaluate("large_base + small_helpful - small_base", path)

Members: small_base, large_base, small_helpful, large_helpful, small_harmless, large_harmless.
"""

from emulate.world.evaluate import evaluate
from emulate.world.family import (
    MEMBERS,
    SIZES,
    WorldInfo,
    build_world,
    default_world_dir,
    load_world,
)

__all__ = [
    "MEMBERS",
    "SIZES",
    "WorldInfo",
    "build_world",
    "default_world_dir",
    "evaluate",
    "load_world",
]
