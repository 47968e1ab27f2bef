"""An OpenAI-compatible HTTP server for compositions: `emulate serve --config FILE`.

Names load on first use, so the command line's help needs neither the server nor torch."""

import importlib

_LAZY = {
    "create_app": "emulate.server.app",
    "Batcher": "emulate.server.batcher",
    "ConfigError": "emulate.server.config",
    "ServerConfig": "emulate.server.config",
    "ServerSettings": "emulate.server.config",
    "build_compositions": "emulate.server.config",
    "load_config": "emulate.server.config",
    "parse_config": "emulate.server.config",
    "EngineGone": "emulate.server.engine_process",
    "EngineProcess": "emulate.server.engine_process",
    "Job": "emulate.server.jobs",
    "Overloaded": "emulate.server.jobs",
    "Served": "emulate.server.translate",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'emulate.server' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
