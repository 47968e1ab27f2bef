"""An OpenAI-compatible HTTP server for compositions: `emulate serve --config FILE`.

Names load on first use, so the command line's help needs neither the server nor torch."""

from emulate.common.lazy import lazy_exports

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


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
