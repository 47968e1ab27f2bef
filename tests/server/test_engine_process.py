"""The server with its engine in a process of its own (`server.engine: process`, the CLI's
default): answers equal the in-process engine's, cancellations reach the engine, a checkpoint
that fails to load is reported before serving, and an engine that dies answers 503."""

from __future__ import annotations

import os
import shutil
import signal
import time

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
