"""The server's batcher driven directly: admission and stepping called one at a time, so which
request joins which batch is decided by the test, never by timing.

Every request must decode exactly as if alone, whatever it shares a batch with: queued behind
a full batch, merged into a running one, in cohorts interleaved with other compositions, other
terms, speculative decoding, a failing cohort or cancelled neighbours.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
from tiny_models import llama, make_tokenizer

from emulate import Composition, SamplingParams
from emulate.server.batcher import Batcher
from emulate.server.jobs import Job
from emulate.server.protocol import CompletionRequest
from emulate.server.translate import Served, build_rows, job_usage, response_body

SPEC = {"draft": "chat", "k": 2, "adaptive": False}
PROMPTS = ["The quick", "Où est la gare?", "Numbers 0123", "a", "fine-tuning delta", "Ça"]


@pytest.fixture(scope="module")
def compositions():
    tokenizer = make_tokenizer()
    vocab = len(tokenizer)
    large, small = llama(vocab, hidden=64, seed=1), llama(vocab, seed=2)
    # chat and small: one model read through two templates, so its rows sit in term blocks
    eft = Composition("large + beta*(chat - small)",
                      {"large": (large, tokenizer), "chat": (small, tokenizer),
                       "small": (small, tokenizer)},
                      templates={"chat": "chat"}, parameters={"beta": 1.0})
    plain = Composition("large", {"large": (large, tokenizer)})
    return {"eft": eft, "plain": plain}


def params(seed, n=8, **kwargs):
    return SamplingParams(max_new_tokens=n, temperature=kwargs.pop("temperature", 1.0),
                          seed=seed, **kwargs)


def alone(compositions, model, prompt, row_params, speculative=None):
    """The engine's output for one row decoded by itself."""
    decoder = compositions[model].decoder([prompt], [copy.deepcopy(row_params)], speculative)
    while not decoder.done:
        decoder.step()
    return decoder.completion(0)


def job(model, prompts, row_params, speculative=None) -> Job:
    return Job(model, list(prompts), [copy.deepcopy(p) for p in row_params], speculative)


async def step_all(batcher: Batcher) -> None:
    """One scheduling round: admit what waits, then one step of every cohort."""
    await batcher._admit()
    for cohort in list(batcher._cohorts):
        await batcher._step(cohort)


async def until_done(batcher: Batcher, jobs, limit: int = 200) -> None:
    for _ in range(limit):
        if all(j.done.done() for j in jobs):
            return
        await step_all(batcher)
    raise AssertionError("jobs did not finish")


def batcher_for(compositions, **kwargs) -> Batcher:
    """No gathering: what waits joins at the next admission."""
    return Batcher(compositions, admit_fraction=0.0, **kwargs)


def assert_alone(compositions, j: Job) -> None:
    for row, completion in enumerate(j.completions):
        expected = alone(compositions, j.model, j.prompts[row], j.params[row], j.speculative)
        assert completion.token_ids == expected.token_ids, (j.model, row)
        assert (completion.text, completion.finish_reason) == (expected.text,
                                                                 expected.finish_reason)


def test_queued_requests_wait_for_room_then_merge(compositions):
    async def scenario():
        batcher = batcher_for(compositions, max_batch=2, max_cohorts=1)
        jobs = [job("eft", [PROMPTS[0]], [params(1, n=3)]),
                job("eft", [PROMPTS[1]], [params(2, n=12, temperature=0)]),
                job("eft", [PROMPTS[2]], [params(3, n=10)])]
        for j in jobs:
            await batcher.submit(j)
        await batcher._admit()
        metrics = batcher.metrics()
        assert (metrics["cohorts"], metrics["active_rows"], metrics["queued_rows"]) == (1, 2, 1)
        assert jobs[0].started.done() and not jobs[2].started.done()
        while not jobs[0].done.done():
            await step_all(batcher)
        await batcher._admit()  # the finished row made room: the third merges in
        assert jobs[2].started.done() and batcher.stats["merges"] == 1
        assert batcher.metrics()["cohorts"] == 1
        await until_done(batcher, jobs)
        await batcher.close()
        return jobs

    for j in asyncio.run(scenario()):
        assert_alone(compositions, j)


def test_speculative_requests_join_the_running_speculative_cohort(compositions):
    """Arrivals join between two rounds: one cohort serves them all, each row as if alone."""
    async def scenario():
        batcher = batcher_for(compositions, max_batch=8, max_cohorts=4)
        first = job("eft", PROMPTS[:2], [params(1, n=12), params(2, n=9, temperature=0)],
                    speculative=SPEC)
        await batcher.submit(first)
        await batcher._admit()
        joiners = [job("eft", [PROMPTS[2]], [params(3, n=10, temperature=0)], speculative=SPEC),
                   job("eft", [PROMPTS[4], PROMPTS[5]], [params(4, n=7), params(5, n=11)],
                       speculative=SPEC)]
        for j in joiners:
            await batcher.submit(j)
        await batcher._admit()  # before its first round the cohort takes no one in: they wait
        assert batcher.metrics()["cohorts"] == 1 and batcher.metrics()["queued_rows"] == 3
        await step_all(batcher)  # its first round; they join at the next admission
        await batcher._admit()
        assert batcher.stats["merges"] == 1 and batcher.metrics()["cohorts"] == 1
        assert batcher.metrics()["active_rows"] == 5
        later = job("eft", [PROMPTS[3]], [params(6, n=8)], speculative=SPEC)
        await batcher.submit(later)
        await step_all(batcher)
        assert batcher.stats["merges"] == 2 and batcher.metrics()["cohorts"] == 1
        other = job("eft", [PROMPTS[0]], [params(7, n=8)], speculative={**SPEC, "k": 1})
        await batcher.submit(other)  # other options: a cohort of its own
        await step_all(batcher)
        assert batcher.metrics()["cohorts"] == 2
        jobs = [first, *joiners, later, other]
        await until_done(batcher, jobs)
        assert batcher.stats["accepted_drafts"] > 0
        await batcher.close()
        return jobs

    for j in asyncio.run(scenario()):
        assert_alone(compositions, j)
        assert_streamed(j)  # a joining row's first token, taken off its prefill, too


def test_a_speculative_request_done_with_its_first_token_joins_and_leaves(compositions):
    async def scenario():
        batcher = batcher_for(compositions, max_batch=8)
        running = job("eft", PROMPTS[:2], [params(1, n=10), params(2, n=9)], speculative=SPEC)
        await batcher.submit(running)
        await step_all(batcher)
        short = job("eft", PROMPTS[2:4], [params(3, n=1), params(4, n=1, temperature=0)],
                    speculative=SPEC)
        await batcher.submit(short)
        await batcher._admit()  # its only tokens come off its prefill: done before any round
        assert short.done.done() and batcher.metrics()["cohorts"] == 1
        assert batcher.stats["merges"] == 0
        await until_done(batcher, [running])
        await batcher.close()
        return running, short

    for j in asyncio.run(scenario()):
        assert_alone(compositions, j)
        assert_streamed(j)


def assert_streamed(j: Job) -> None:
    """The deltas a job's rows streamed add up to their completions."""
    texts = [""] * j.rows
    while not j.events.empty():
        row, text, _ = j.events.get_nowait()
        texts[row] += text
    assert texts == [c.text for c in j.completions]


def test_interleaved_cohorts_each_decode_as_alone(compositions):
    """Another composition, an override that drops two terms, a speculative request and a
    late arrival merged mid-flight, all in flight at once."""
    async def scenario():
        batcher = batcher_for(compositions, max_batch=8, max_cohorts=4)
        first = [job("eft", PROMPTS[:2], [params(1), params(2, temperature=0)]),
                 job("plain", [PROMPTS[2]], [params(3, top_k=5)]),
                 job("eft", [PROMPTS[3]], [params(4, weights={"chat": 0.0, "small": 0.0})]),
                 job("eft", [PROMPTS[4]], [params(5, n=10)], speculative=SPEC)]
        for j in first:
            await batcher.submit(j)
        await batcher._admit()
        assert batcher.metrics()["cohorts"] == 4  # four kinds: none can share a decoder
        assert {c.kind[1] for c in batcher._cohorts} == {("large", "chat", "small"), ("large",)}
        for _ in range(3):
            await step_all(batcher)
        late = job("eft", [PROMPTS[5]], [params(6, n=6, min_p=0.1)])
        await batcher.submit(late)
        await step_all(batcher)
        assert batcher.stats["merges"] == 1  # into the running cohort of its kind
        owners = next({id(o) for o, _ in c.owners} for c in batcher._cohorts
                      if any(o is first[0] for o, _ in c.owners))
        assert id(late) in owners
        await until_done(batcher, [*first, late])
        await batcher.close()
        return [*first, late]

    for j in asyncio.run(scenario()):
        assert_alone(compositions, j)


class FailingAfter:
    """A composition whose decoders raise on their `steps`-th step."""

    def __init__(self, composition, steps: int):
        self._composition, self._steps = composition, steps

    def __getattr__(self, name):
        return getattr(self._composition, name)

    def decoder(self, prompts, params, speculative=None, joining=False):
        decoder = self._composition.decoder(prompts, params, speculative, joining)
        step, calls = decoder.step, []

        def failing():
            calls.append(1)
            if len(calls) == self._steps:
                raise RuntimeError("the device fell over")
            return step()

        decoder.step = failing
        return decoder


def test_an_exception_in_one_cohort_fails_only_its_requests(compositions):
    served = {**compositions, "broken": FailingAfter(compositions["plain"], steps=3)}

    async def scenario():
        batcher = batcher_for(served, max_batch=8, max_cohorts=4)
        doomed = [job("broken", [PROMPTS[0]], [params(1)]),
                  job("broken", [PROMPTS[1]], [params(2, temperature=0)])]
        healthy = [job("eft", PROMPTS[2:4], [params(3), params(4)]),
                   job("plain", [PROMPTS[4]], [params(5)])]
        for j in [*doomed, *healthy]:
            await batcher.submit(j)
        await until_done(batcher, [*doomed, *healthy])
        for j in doomed:
            assert isinstance(j.done.exception(), RuntimeError)
            events = [j.events.get_nowait() for _ in range(j.events.qsize())]
            assert isinstance(events[-1], RuntimeError)
        assert batcher.stats["failed"] == 2 and batcher.stats["completed"] == 2
        assert batcher.metrics()["cohorts"] == 0
        await batcher.close()
        return healthy

    for j in asyncio.run(scenario()):
        assert_alone(compositions, j)


def test_cancelling_while_queued_and_while_prefilling(compositions):
    async def scenario():
        batcher = batcher_for(compositions, max_batch=4, max_cohorts=1)
        running = job("eft", [PROMPTS[0]], [params(1, n=12)])
        await batcher.submit(running)
        await batcher._admit()
        queued = job("eft", [PROMPTS[1]], [params(2)])
        await batcher.submit(queued)
        assert batcher.metrics()["queued_rows"] == 1
        batcher.cancel(queued)  # gone before any prefill
        assert batcher.metrics()["queued_rows"] == 0 and queued.done.cancelled()
        await step_all(batcher)
        assert batcher.stats["prefills"] == 1  # nothing was prefilled for it

        leaving = job("eft", PROMPTS[2:4], [params(3), params(4)])
        staying = job("eft", [PROMPTS[4]], [params(5, n=6)])
        for j in (leaving, staying):
            await batcher.submit(j)
        engine_run = batcher.run

        async def cancel_during_prefill(fn, *args):
            result = await engine_run(fn, *args)
            if getattr(fn, "__name__", "") == "decoder":  # the prefill of both arrivals
                batcher.cancel(leaving)
            return result

        batcher.run = cancel_during_prefill
        await batcher._admit()
        batcher.run = engine_run
        assert batcher.stats["merges"] == 1 and batcher.stats["cancelled_rows"] == 2
        cohort = batcher._cohorts[0]
        assert len(cohort.live) == 2 and len(cohort.cancels) == 2  # running + staying
        await until_done(batcher, [running, staying])
        assert leaving.done.cancelled() and all(c is None for c in leaving.completions)
        await batcher.close()
        return [running, staying]

    for j in asyncio.run(scenario()):
        assert_alone(compositions, j)


def test_n_choices_are_the_engine_with_consecutive_seeds(compositions):
    """Choice p * n + j of a request with a seed is prompt p decoded alone with seed + p*n + j;
    usage counts each prompt once and every choice's tokens."""
    request = CompletionRequest(model="eft", prompt=[PROMPTS[0], PROMPTS[1]], n=3, seed=11,
                                temperature=1.2, max_tokens=7)
    served = Served("eft", compositions["eft"])
    rows, row_params, speculative = build_rows(request, served, max_batch=8, max_n=4,
                                               max_prompts=4)

    async def scenario():
        batcher = batcher_for(compositions, max_batch=8)
        j = Job("eft", rows, row_params, speculative)
        await batcher.submit(j)
        await until_done(batcher, [j])
        await batcher.close()
        return j

    j = asyncio.run(scenario())
    composition = compositions["eft"]
    for index, completion in enumerate(j.completions):
        prompt = PROMPTS[index // 3]
        expected = composition.complete([prompt], max_new_tokens=7, temperature=1.2,
                                        seed=11 + index)[0]
        assert completion.token_ids == expected.token_ids, index
    assert len({tuple(c.token_ids) for c in j.completions}) > 1
    usage = job_usage(j, 3)  # a prompt's tokens: its longest rendering (the chat template)
    assert usage["prompt_tokens"] == sum(len(composition.prompt_ids("chat", p))
                                         for p in PROMPTS[:2])
    assert usage["completion_tokens"] == sum(len(c.token_ids) for c in j.completions)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    body = response_body(False, j, "id", 0, "eft", 3, {})
    assert [c["index"] for c in body["choices"]] == list(range(6))
    assert [c["text"] for c in body["choices"]] == [c.text for c in j.completions]
