"""`emulate serve`: load the configured compositions and serve them over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def serve_command(
    config: Annotated[
        Path | None,
        typer.Option(help="YAML or TOML file naming the compositions to serve "
                     "(default: the toy world's up-scaled composition)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind; loopback unless you say so.")]
    = "127.0.0.1",
    port: int = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="EMULATE_API_KEY",
                     help="Require 'Authorization: Bearer KEY' on /v1 endpoints."),
    ] = None,
    world_size: Annotated[
        str, typer.Option(help="Without --config: the toy world size to serve (built if needed).")
    ] = "default",
    threads: Annotated[
        int | None, typer.Option(help="Torch CPU threads (overrides the config's server.threads).")
    ] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="'process': the models decode in a process of their own (default); "
                     "'thread': on a thread beside the HTTP server (overrides server.engine)."),
    ] = None,
    log_level: str = "info",
):
    """Serve compositions through an OpenAI-compatible API (/v1/completions, /v1/chat/...)."""
    import uvicorn

    from emulate.common.cli import fail, quiet_transformers
    from emulate.common.errors import EmulateError
    from emulate.server.app import create_app
    from emulate.server.config import build_compositions, load_config, toy_world_config
    from emulate.server.engine_process import EngineProcess
    from emulate.server.translate import Served

    quiet_transformers()
    if config is None:
        typer.echo(f"no --config: serving the toy world's up-scaled composition ({world_size} "
                   "size; built on first use, which trains six small models)", err=True)
    if engine not in (None, "process", "thread"):
        fail(EmulateError(f"--engine must be 'process' or 'thread', got {engine!r}"))
    try:
        settings = load_config(config) if config is not None else toy_world_config(world_size)
        if threads is not None:
            settings.server.threads = threads
        if engine is not None:
            settings.server.engine = engine
        # With an engine process, this one only checks and answers requests: it needs each
        # model's tokenizer and config, not its weights, which the engine loads.
        engine_process = EngineProcess(settings) if settings.server.engine == "process" else None
        if engine_process is not None:
            typer.echo("loading the models in the engine process", err=True)
            engine_process.spawn()  # it loads while this process reads the tokenizers
        compositions = build_compositions(settings, weights=engine_process is None)
        if engine_process is not None:
            engine_process.launch()
    except EmulateError as error:
        fail(error)
    served = {name: Served(name, compositions[name], spec)
              for name, spec in settings.compositions.items()}
    app = create_app(served, settings.server, api_key=api_key, engine=engine_process)
    typer.echo(f"serving {', '.join(served)} on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
