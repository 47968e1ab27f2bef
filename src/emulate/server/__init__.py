"""An OpenAI-compatible HTTP server for compositions: `emulate serve --config FILE`."""

from emulate.server.app import create_app
from emulate.server.batcher import Batcher
from emulate.server.config import (
    ConfigError,
    ServerConfig,
    ServerSettings,
    build_compositions,
    load_config,
    parse_config,
)
from emulate.server.engine_process import EngineGone, EngineProcess
from emulate.server.jobs import Job, Overloaded
from emulate.server.translate import Served

__all__ = [
    "Batcher",
    "ConfigError",
    "EngineGone",
    "EngineProcess",
    "Job",
    "Overloaded",
    "Served",
    "ServerConfig",
    "ServerSettings",
    "build_compositions",
    "create_app",
    "load_config",
    "parse_config",
]
