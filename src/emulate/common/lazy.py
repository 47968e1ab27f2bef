"""Names a package exports but imports on first use, so that `emulate --help` and argument
errors answer without loading torch or transformers."""

from __future__ import annotations

import importlib


def lazy_exports(namespace: dict, names: dict[str, str]):
    """``(__getattr__, __dir__)`` for the package whose globals are ``namespace``; ``names`` maps
    each exported name to the module that defines it."""
    package = namespace["__name__"]

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
