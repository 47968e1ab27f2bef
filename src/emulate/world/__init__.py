"""The toy world: a seeded world of fictional people and a six-model family trained on it.

    from emulate.world import build_world, load_world
    from emulate.world.evaluate import evaluate
    path = build_world(default_world_dir("micro"), size="micro")
    evaluate("large_base + small_helpful - small_base", path)

Members: small_base, large_base, small_helpful, large_helpful, small_harmless, large_harmless.
"""

from emulate.common.lazy import lazy_exports

# Loaded on first use (they need torch), so the command line's help does not wait for them.
# (``evaluate`` is not among them: the name is its module's, and importing the module rebinds it.)
_LAZY = dict.fromkeys(
    ("MEMBERS", "SIZES", "WorldInfo", "build_world", "default_world_dir", "load_world"),
    "emulate.world.family")
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
