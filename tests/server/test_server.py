"""The OpenAI-compatible server, driven over loopback by the official `openai` client and httpx.

One server serves the micro toy world's up-scaled composition (plus a plain one-term composition);
a second, tiny-capacity server with an API key checks authentication, the bounded queue and
that a client leaving mid-stream frees its slot at once.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from live_server import Server
from server_cases import BAD_REQUESTS, COMP, EFT, MSG, PLAIN

from emulate.server import ServerSettings, create_app
from emulate.server.config import (
    build_compositions,
    load_config,
)
from emulate.server.translate import Served

KEY = "sk-test-key"
QUESTION = [{"role": "user", "content": "Where does Ada live?"}]


@pytest.fixture(scope="module")
def config(micro_world, tmp_path_factory):
    path = tmp_path_factory.mktemp("server") / "serve.yaml"
    path.write_text(f"""
models:
  small_base: {micro_world}/small_base
  large_base: {micro_world}/large_base
  small_helpful: {micro_world}/small_helpful
compositions:
  {EFT}:
    formula: large_base + beta*(small_helpful - small_base)
    parameters: {{beta: 1.0}}
    template: chat
    terms: {{large_base: large_base, small_helpful: small_helpful, small_base: small_base}}
  {PLAIN}:
    formula: large_base
    terms: {{large_base: large_base}}
    defaults: {{temperature: 0.0}}
server: {{max_body_bytes: 100000, max_batch: 16, threads: 1}}
""")
    return load_config(path)


@pytest.fixture(scope="module")
def compositions(config):
    return build_compositions(config)


def served_from(config, compositions):
    return {n: Served(n, compositions[n], config.compositions[n]) for n in compositions}


@pytest.fixture(scope="module")
def server(config, compositions):
    with Server(create_app(served_from(config, compositions), config.server)) as running:
        yield running


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0,
                         timeout=60)


def test_config_shares_models_and_lists_them(compositions, client, server):
    eft, plain = compositions[EFT], compositions[PLAIN]
    assert eft.loaded["large_base"].model is plain.loaded["large_base"].model  # loaded once
    ids = [m.id for m in client.models.list().data]
    assert ids == [EFT, PLAIN]
    assert server.health()["status"] == "ok"


def test_completion_matches_the_engine(client, compositions):
    prompt = "Ada lives in"
    out = client.completions.create(model=PLAIN, prompt=prompt, max_tokens=12, temperature=0)
    expected = compositions[PLAIN].complete([prompt], max_new_tokens=12, temperature=0)[0]
    choice = out.choices[0]
    assert choice.text == expected.text
    assert choice.finish_reason == expected.finish_reason
    assert out.usage.completion_tokens == len(expected.token_ids)
    assert out.usage.prompt_tokens == expected.prompt_tokens > 0


def test_chat_matches_the_engine_and_streams_the_same(client, compositions):
    expected = compositions[EFT].generate([QUESTION], max_new_tokens=20, temperature=0)[0]
    out = client.chat.completions.create(model=EFT, messages=QUESTION, max_tokens=20,
                                         temperature=0)
    assert out.choices[0].message.content == expected
    assert out.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model=EFT, messages=QUESTION, max_tokens=20,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_completion_stream_ends_with_done(server):
    body = {"model": PLAIN, "prompt": "Ada", "max_tokens": 5, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_extra_body_knobs_change_the_output(client, compositions):
    def greedy(extra):
        out = client.chat.completions.create(model=EFT, messages=QUESTION, max_tokens=24,
                                             temperature=0, extra_body=extra)
        return out.choices[0].message.content

    plain_eft = greedy(None)
    beta0 = greedy({"emulate": {"parameters": {"beta": 0.0}}})
    assert beta0 == greedy({"emulate": {"beta": 0.0}})  # shorthand
    only_helpful = greedy({"emulate": {"weights": {"large_base": 0.0, "small_base": 0.0}}})
    eft = compositions[EFT]
    assert plain_eft == eft.generate([QUESTION], 24, temperature=0)[0]
    assert beta0 != plain_eft and only_helpful != plain_eft
    assert beta0 == eft.generate([QUESTION], 24, temperature=0, parameters={"beta": 0.0})[0]
    assert only_helpful == eft.generate([QUESTION], 24, temperature=0,
                                        weights={"large_base": 0.0, "small_base": 0.0})[0]


def test_speculative_requests_decode_exactly(client, compositions, server):
    """`emulate.speculative` decodes a request speculatively: greedy output is the lockstep
    output, sampled output the engine's for the same seed; /health counts the drafts."""
    eft = compositions[EFT]
    expected = eft.generate([QUESTION], max_new_tokens=20, temperature=0)[0]
    before = server.health()
    for speculative in (True, {"draft": "small_helpful", "k": 3, "adaptive": False}):
        out = client.chat.completions.create(
            model=EFT, messages=QUESTION, max_tokens=20, temperature=0,
            extra_body={"emulate": {"speculative": speculative}})
        assert out.choices[0].message.content == expected
        assert out.usage.completion_tokens == len(eft.complete(
            [QUESTION], max_new_tokens=20, temperature=0)[0].token_ids)
    stream = client.chat.completions.create(
        model=EFT, messages=QUESTION, max_tokens=20, temperature=0, stream=True,
        extra_body={"emulate": {"speculative": True}})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
    after = server.health()
    assert after["drafted"] > before["drafted"]
    assert after["accepted_drafts"] > before["accepted_drafts"]
    sampled = client.completions.create(model=EFT, prompt="Ada", max_tokens=10, temperature=1.0,
                                        seed=3, extra_body={"emulate": {"speculative": True}})
    engine = eft.complete(["Ada"], max_new_tokens=10, temperature=1.0, seed=3, speculative=True)
    assert sampled.choices[0].text == engine[0].text


def test_choice_i_of_n_is_the_engine_with_seed_plus_i(client, compositions):
    out = client.completions.create(model=EFT, prompt="Ada", max_tokens=10, n=3,
                                    temperature=1.5, seed=7)
    assert [c.index for c in out.choices] == [0, 1, 2]
    engine = [compositions[EFT].complete(["Ada"], max_new_tokens=10, temperature=1.5,
                                         seed=7 + i)[0] for i in range(3)]
    assert [c.text for c in out.choices] == [e.text for e in engine]
    assert out.usage.prompt_tokens == engine[0].prompt_tokens  # the prompt counts once
    assert out.usage.completion_tokens == sum(len(e.token_ids) for e in engine)
    again = client.completions.create(model=EFT, prompt="Ada", max_tokens=10, n=3,
                                      temperature=1.5, seed=7)
    assert [c.text for c in again.choices] == [c.text for c in out.choices]


def test_concurrent_requests_keep_their_settings(client, server):
    """Over HTTP, concurrent requests decode as alone (which batches they share is timing;
    test_batcher.py drives admission deterministically)."""
    prompts = [f"{name} lives in" for name in ("Ada", "Bo", "Cy", "Di", "Ed", "Flo")]
    settings = [dict(temperature=0, max_tokens=6 + i) if i % 2 else
                dict(temperature=1.0, seed=i, max_tokens=10, stop=["\n"])
                for i in range(len(prompts))]
    alone = [client.completions.create(model=EFT, prompt=p, **s).choices[0].text
             for p, s in zip(prompts, settings, strict=True)]
    async def together():
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x",
                                      max_retries=0) as aclient:
            outs = await asyncio.gather(*[
                aclient.completions.create(model=EFT, prompt=p, **s)
                for p, s in zip(prompts, settings, strict=True)
            ])
        return [o.choices[0].text for o in outs]

    assert asyncio.run(together()) == alone




@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_its_4xx_and_the_server_stays_up(server, http, case):
    _, method, path, body, status, param = case
    content = json.dumps(body) if isinstance(body, dict) else body
    response = http.request(method, path, content=content,
                            headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param, error
    assert http.get("/health").json()["status"] == "ok"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]}, "messages"),
    ("/v1/completions", {"prompt": ""}, "prompt"),
    ("/v1/completions", {"prompt": ["Ada", ""]}, "prompt"),
], ids=["chat", "text", "one-of-two"])
def test_an_empty_prompt_is_a_400_as_at_the_api(http, path, body, param):
    response = http.post(path, json={"model": EFT, "max_tokens": 2, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and "the prompt is empty" in error["message"], error


def test_a_dropped_upload_logs_no_error(server, http, caplog):
    """A client that hangs up halfway through its body is not a server error."""
    import logging
    import socket
    from urllib.parse import urlparse

    url = urlparse(server.url)
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            with socket.create_connection((url.hostname, url.port)) as raw:
                raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
                            b'{"model": "')
        time.sleep(0.5)
        assert http.get("/health").json()["status"] == "ok"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_the_openai_client_raises_on_bad_requests(client):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=EFT, prompt="a", temperature=-1)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[MSG])
    with pytest.raises(openai.BadRequestError, match="unknown term"):
        client.chat.completions.create(model=EFT, messages=[MSG],
                                       extra_body={"emulate": {"weights": {"zz": 1}}})


class Slow:
    """A composition whose decode steps take at least 20 ms, so a stream outlives a round trip."""

    def __init__(self, composition):
        self._composition = composition

    def __getattr__(self, name):
        return getattr(self._composition, name)

    def decoder(self, prompts, params, speculative=None, joining=False):
        decoder = self._composition.decoder(prompts, params, speculative, joining)
        step = decoder.step

        def slow_step():
            time.sleep(0.02)
            return step()

        decoder.step = slow_step
        return decoder


@pytest.fixture(scope="module")
def tight(config, compositions):
    """One row at a time, no queue, an API key: slots and auth are easy to observe."""
    settings = ServerSettings(max_batch=1, max_cohorts=1, max_queue=0, threads=1)
    slow = {name: Slow(composition) for name, composition in compositions.items()}
    app = create_app(served_from(config, slow), settings, api_key=KEY)
    with Server(app) as running:
        yield running


def test_api_key_is_required(tight):
    no_key = httpx.post(f"{tight.url}{COMP}", json={"prompt": "a", "max_tokens": 2})
    assert no_key.status_code == 401 and no_key.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=f"{tight.url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    right = openai.OpenAI(base_url=f"{tight.url}/v1", api_key=KEY, max_retries=0)
    assert right.completions.create(model=PLAIN, prompt="Ada", max_tokens=2).choices
    assert tight.health()["status"] == "ok"  # health needs no key


def test_disconnect_mid_stream_frees_the_slot(tight, compositions):
    auth = {"Authorization": f"Bearer {KEY}"}
    room = compositions[EFT].context_length("large_base") - 16
    long = {"model": EFT, "prompt": "Ada", "max_tokens": room, "ignore_eos": True, "stream": True}
    short = {"model": PLAIN, "prompt": "Ada", "max_tokens": 2}
    before = tight.health()["cancelled_rows"]
    with httpx.Client(timeout=30, headers=auth) as http:
        with http.stream("POST", f"{tight.url}{COMP}", json=long) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()  # (dropping this iterator would close the connection)
            assert next(lines).startswith("data: ")  # a token has arrived: the row is decoding
            assert tight.health()["active_rows"] == 1
            full = http.post(f"{tight.url}{COMP}", json=short)  # no free row, no queue
            assert full.status_code == 503 and full.headers["Retry-After"] == "1"
        deadline = time.monotonic() + 5  # the client has gone away
        while tight.health()["active_rows"] and time.monotonic() < deadline:
            time.sleep(0.01)
        health = tight.health()
        assert health["active_rows"] == 0
        assert health["cancelled_rows"] == before + 1
        assert http.post(f"{tight.url}{COMP}", json=short).status_code == 200


def test_a_client_giving_up_on_a_full_response_cancels_it(tight, compositions):
    room = compositions[EFT].context_length("large_base") - 16
    body = {"model": EFT, "prompt": "Ada", "max_tokens": room, "ignore_eos": True}
    before = tight.health()["cancelled_rows"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{tight.url}{COMP}", json=body, timeout=0.5,
                   headers={"Authorization": f"Bearer {KEY}"})
    deadline = time.monotonic() + 5
    while tight.health()["active_rows"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tight.health()["active_rows"] == 0
    assert tight.health()["cancelled_rows"] == before + 1


def test_merged_rows_decode_as_if_alone():
    """The engine hook behind continuous batching: rows merged mid-flight into a running
    decoder (two terms sharing one model, so rows sit in per-term blocks) keep their tokens."""
    from tiny_models import llama, make_tokenizer

    from emulate import Composition, SamplingParams

    tok = make_tokenizer()
    small, large = llama(len(tok), seed=0), llama(len(tok), seed=1)
    composition = Composition("large + 1.5*(small_chat - small)",
                              {"large": (large, tok), "small": (small, tok),
                               "small_chat": (small, tok)}, templates={"small_chat": "chat"})

    def params(n, seed):
        return [SamplingParams(max_new_tokens=12 + 3 * i, temperature=i % 2, seed=seed + i,
                               ignore_eos=True) for i in range(n)]

    first, second = ["The quick brown fox", "Où est", "Numbers"], ["Emulated fine-tuning", "Ça"]
    alone = []
    for prompts, seed in ((first, 0), (second, 10)):
        decoder = composition.decoder(prompts, params(len(prompts), seed))
        while not decoder.done:
            decoder.step()
        alone.append([decoder.completion(i).token_ids for i in range(len(prompts))])
    decoder = composition.decoder(first, params(3, 0))
    for _ in range(4):
        decoder.step()
    decoder.cancel(0)
    decoder.step()
    late = composition.decoder(second, params(2, 10))
    assert decoder.can_merge(late)
    offset = decoder.merge(late)
    while not decoder.done:
        decoder.step()
    assert decoder.completion(0).finish_reason == "cancelled"
    assert [decoder.completion(i).token_ids for i in (1, 2)] == alone[0][1:]
    assert [decoder.completion(offset + i).token_ids for i in (0, 1)] == alone[1]
