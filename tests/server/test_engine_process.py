"""The server with its engine in a process of its own (`server.engine: process`, the CLI's
default): answers equal the in-process engine's, cancellations reach the engine, a checkpoint
that fails to load is reported before serving, and an engine that dies answers 503."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import Server
from server_cases import COMP, EFT
from typer.testing import CliRunner

from emulate.cli import app as cli
from emulate.server import create_app
from emulate.server.config import ConfigError, build_compositions, world_config
from emulate.server.engine_process import EngineProcess
from emulate.server.translate import Served

QUESTION = [{"role": "user", "content": "Where does Ada live?"}]
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def config(micro_world):
    return world_config(micro_world, name=EFT)


@pytest.fixture(scope="module")
def engine(config):
    engine = EngineProcess(config)
    engine.launch()  # (the server's shutdown closes it)
    return engine


@pytest.fixture(scope="module")
def server(config, engine):
    structure = build_compositions(config, weights=False)  # no weights in this process
    served = {n: Served(n, structure[n], config.compositions[n]) for n in structure}
    with Server(create_app(served, config.server, engine=engine)) as running:
        yield running


@pytest.fixture(scope="module")
def full(config):
    return build_compositions(config)[EFT]


def test_the_front_end_holds_no_weights(config, full):
    structure = build_compositions(config, weights=False)[EFT]
    for loaded in structure.loaded.values():
        assert {p.device.type for p in loaded.model.parameters()} == {"meta"}
    assert structure.vocab_size == full.vocab_size
    assert structure.eos_token_ids == full.eos_token_ids
    assert structure.prompt_ids("large_base", QUESTION) == full.prompt_ids("large_base", QUESTION)


@pytest.mark.parametrize("speculative", [False, True])
@pytest.mark.parametrize("stream", [False, True])
def test_answers_equal_the_engine_run_here(server, full, speculative, stream):
    expected = full.complete([QUESTION], max_new_tokens=24, temperature=0)[0]
    body = {"model": EFT, "messages": QUESTION, "max_tokens": 24, "temperature": 0,
            "stream": stream, "emulate": {"speculative": speculative}}
    with httpx.Client(timeout=60) as http:
        response = http.post(f"{server.url}{CHAT}", json=body)
    assert response.status_code == 200
    if stream:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        chunks = [httpx.Response(200, content=e).json() for e in events[:-1]]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        reason = chunks[-1]["choices"][0]["finish_reason"]
    else:
        text = response.json()["choices"][0]["message"]["content"]
        reason = response.json()["choices"][0]["finish_reason"]
    assert (text, reason) == (expected.text, expected.finish_reason)


def test_a_bad_request_is_answered_by_the_engine_checks(server):
    long = {"model": EFT, "prompt": "Ada " * 400, "max_tokens": 4}
    response = httpx.post(f"{server.url}{COMP}", json=long, timeout=30)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_a_client_leaving_cancels_its_row_in_the_engine(server, config):
    room = build_compositions(config, weights=False)[EFT].context_length("large_base") - 16
    body = {"model": EFT, "prompt": "Ada", "max_tokens": room, "ignore_eos": True,
            "stream": True}
    before = server.health()["cancelled_rows"]
    with httpx.Client(timeout=30) as http, http.stream("POST", f"{server.url}{COMP}",
                                                      json=body) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("data: ")
    for _ in range(500):  # the cancellation crosses the pipe; the engine then reports it
        health = server.health()
        if health["cancelled_rows"] == before + 1 and health["active_rows"] == 0:
            break
        time.sleep(0.01)
    assert (health["cancelled_rows"], health["active_rows"]) == (before + 1, 0)


def test_an_engine_that_died_answers_503(server, engine):
    os.kill(engine.pid, signal.SIGKILL)  # what an out-of-memory kill does
    time.sleep(0.5)
    with httpx.Client(timeout=30) as http:
        response = http.post(f"{server.url}{COMP}", json={"model": EFT, "prompt": "Ada",
                                                          "max_tokens": 2})
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "engine_unavailable"
        assert http.get(f"{server.url}/health").status_code == 503


def test_weights_that_fail_to_load_are_reported_before_serving(micro_world, tmp_path):
    broken = tmp_path / "world"
    shutil.copytree(micro_world, broken, ignore=shutil.ignore_patterns("*.jsonl"))
    (broken / "small_base" / "model.safetensors").write_bytes(b"not a safetensors file")
    config = world_config(broken, name=EFT)
    build_compositions(config, weights=False)  # tokenizer and config read fine
    with pytest.raises(ConfigError, match="small_base"):
        EngineProcess(config).launch()


def test_serve_refuses_an_unknown_engine():
    result = CliRunner().invoke(cli, ["serve", "--engine", "fiber"])
    assert result.exit_code == 2
    assert "--engine must be 'process' or 'thread'" in result.output


def test_serve_runs_the_engine_process_and_stops_it(micro_world, tmp_path):
    """`emulate serve` as a user runs it: answers, then Ctrl-C stops both processes."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "from emulate.cli import app; app()", "serve", "--port",
         str(port), "--config", str(world_yaml(micro_world, tmp_path / "serve.yaml"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(1200):  # (two interpreters import torch: seconds on a small machine)
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        engines = children(server.pid)
        assert len(engines) == 1  # the engine process
        body = {"model": EFT, "messages": QUESTION, "max_tokens": 8, "temperature": 0}
        assert httpx.post(f"{url}{CHAT}", json=body, timeout=60).status_code == 200
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0, server.stderr.read()
        assert not any(Path(f"/proc/{pid}").exists() for pid in engines)
    finally:
        if server.poll() is None:
            server.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def world_yaml(world: Path, path: Path) -> Path:
    members = ("large_base", "small_helpful", "small_base")
    terms = ", ".join(f"{m}: {world / m}" for m in members)
    path.write_text(f"""
compositions:
  {EFT}:
    formula: large_base + beta*(small_helpful - small_base)
    parameters: {{beta: 1.0}}
    template: chat
    terms: {{{terms}}}
server: {{threads: 1}}
""")
    return path


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc), the spawn machinery's tracker aside."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if fields[1] == str(pid) and b"resource_tracker" not in command:
            found.append(int(stat.parent.name))
    return found
