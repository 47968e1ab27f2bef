"""Between the wire and the engine: a validated request becomes rows; finished rows, a response.

Rows are prompt-major: request row `p * n + j` is choice `j` of prompt `p`, and is answered as
choice index `p * n + j` (OpenAI's and vLLM's convention). With a seed, row r samples with
seed + r, so choices differ from each other yet every request is reproducible on its own.
"""

from __future__ import annotations

import json

from emulate.common.errors import GenerationParamsError
from emulate.compose import checks
from emulate.compose.checks import EmptyPromptError
from emulate.compose.sampling import Plausibility, SamplingParams
from emulate.server.config import CompositionSpec
from emulate.server.jobs import Job
from emulate.server.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    EmulateOptions,
    PlausibilityOptions,
    SpeculativeOptions,
    chat_choice,
    chat_delta,
    completion_choice,
    envelope,
    usage,
)


class Served:
    """A composition as served: its engine object, its config entry and its limits."""

    def __init__(self, name: str, composition, spec: CompositionSpec | None = None):
        self.name = name
        self.composition = composition
        self.spec = spec or CompositionSpec(name, composition.formula, {})
        contexts = [composition.context_length(t) for t in composition.term_names]
        contexts = [c for c in contexts if c]
        self.context = min(contexts) if contexts else None
        self.max_tokens_limit = self.spec.defaults.max_tokens_limit or self.context or 4096


def build_rows(request: CompletionRequest | ChatRequest, served: Served, max_batch: int,
               max_n: int, max_prompts: int) -> tuple[list, list[SamplingParams], dict | None]:
    """The request's prompts, per-row SamplingParams and speculative options (None: lockstep);
    APIError (400) naming a bad field."""
    refused = request.unsupported()
    if refused:
        raise APIError(400, f"{refused[0]} is not supported by this server", refused[0],
                       "unsupported_parameter")
    if isinstance(request, ChatRequest):
        prompts = [[m.as_dict() for m in request.messages]]
        max_tokens = request.max_completion_tokens or request.max_tokens
        max_tokens_field = ("max_completion_tokens" if request.max_completion_tokens
                            else "max_tokens")
        default_tokens = served.spec.defaults.max_tokens or served.max_tokens_limit
    else:
        prompts = request.prompts()
        max_tokens, max_tokens_field = request.max_tokens, "max_tokens"
        default_tokens = 16  # OpenAI's default for /v1/completions
        if len(prompts) > max_prompts:
            raise APIError(400, f"prompt: at most {max_prompts} prompts per request, "
                           f"got {len(prompts)}", "prompt")
    field = "messages" if isinstance(request, ChatRequest) else "prompt"
    for i, prompt in enumerate(prompts):
        try:
            checks.not_empty(prompt, field if len(prompts) == 1 else f"{field}[{i}]")
        except EmptyPromptError as exc:
            raise APIError(400, str(exc), field) from None
    if request.n > max_n:
        raise APIError(400, f"n must be at most {max_n}, got {request.n}", "n")
    if request.n * len(prompts) > max_batch:
        raise APIError(400, f"n x prompts = {request.n * len(prompts)} rows, more than a batch "
                       f"holds ({max_batch}); send fewer", "n")
    limit = served.max_tokens_limit
    if max_tokens is not None and max_tokens > limit:
        raise APIError(400, f"{max_tokens_field} is {max_tokens}, but this model generates at "
                       f"most {limit} tokens (its context length)", max_tokens_field)
    defaults = served.spec.defaults
    weights, parameters, plausibility = _knobs(request.emulate, served)
    if plausibility is None and defaults.plausibility:
        term, _, top_p = defaults.plausibility.partition(":")
        plausibility = Plausibility(term, float(top_p)) if top_p else Plausibility(term)
    top_k = request.top_k if request.top_k is not None else defaults.top_k
    common = dict(
        max_new_tokens=min(max_tokens or default_tokens, limit),
        temperature=_pick(request.temperature, defaults.temperature),
        top_p=_pick(request.top_p, defaults.top_p), top_k=max(top_k, 0),
        min_p=_pick(request.min_p, defaults.min_p), stop=list(request.stop or []),
        weights=weights, parameters=parameters, plausibility=plausibility,
        ignore_eos=request.ignore_eos,
    )
    rows, params = [], []
    for prompt in prompts:
        for _ in range(request.n):
            seed = None if request.seed is None else (request.seed + len(rows)) % 2**64
            rows.append(prompt)
            try:
                params.append(SamplingParams(seed=seed, **common))
            except GenerationParamsError as exc:  # the shared checks (compose/checks.py)
                raise APIError(400, str(exc), _wire_name(exc.argument)) from None
    return rows, params, _speculative(request, defaults.speculative)


def _speculative(request: ChatRequest | CompletionRequest, configured) -> dict | bool | None:
    """The composition's configured options, each overridden by the request's; the lookup
    history (whether requests' guesses draw on other requests' texts) is the server's call."""
    asked = None if request.emulate is None else request.emulate.speculative
    speculative = configured if asked is None else asked
    if speculative in (None, False):
        return None
    options = dict(configured) if isinstance(configured, dict) else {}
    if isinstance(speculative, SpeculativeOptions):
        options.update(speculative.options())
    return options or True


def _wire_name(argument: str | None) -> str | None:
    """The request field an engine argument came from: parameters['beta'] is
    emulate.parameters.beta, plausibility is emulate.plausibility, stop[0] is stop."""
    if argument is None:
        return None
    head, _, key = argument.partition("[")
    key = key.rstrip("]").strip("'")
    if head in ("weights", "parameters"):
        return f"emulate.{head}" + (f".{key}" if key else "")
    if head.startswith("plausibility"):
        return "emulate.plausibility"
    return {"max_new_tokens": "max_tokens"}.get(head, head)


def _pick(value, default):
    return default if value is None else value


def _knobs(options: EmulateOptions | None, served: Served):
    """The `emulate` extension: weights, parameters and plausibility, names checked."""
    if options is None:
        return None, None, None
    composition = served.composition
    terms, known_parameters = composition.term_names, composition.parameters
    weights = dict(options.weights)
    parameters = dict(options.parameters)
    for name, value in (options.model_extra or {}).items():
        if name in known_parameters:
            parameters[name] = float(value)
        elif name in terms:
            weights[name] = float(value)
        else:
            raise APIError(400, f"emulate.{name} names neither a parameter "
                           f"({sorted(known_parameters) or 'none'}) nor a term ({terms})",
                           f"emulate.{name}")
    for name in weights:
        if name not in terms:
            raise APIError(400, f"emulate.weights names unknown term {name!r}; terms are "
                           f"{terms}", f"emulate.weights.{name}")
    for name in parameters:
        if name not in known_parameters:
            raise APIError(400, f"emulate.parameters names unknown parameter {name!r}; this "
                           f"composition's parameters are {sorted(known_parameters) or 'none'}",
                           f"emulate.parameters.{name}")
    plausibility = options.plausibility
    if isinstance(plausibility, str):
        term, _, top_p = plausibility.partition(":")
        try:
            plausibility = Plausibility(term, float(top_p)) if top_p else Plausibility(term)
        except ValueError:
            raise APIError(400, "emulate.plausibility must be 'term' or 'term:top_p'",
                           "emulate.plausibility") from None
    elif isinstance(plausibility, PlausibilityOptions):
        plausibility = Plausibility(plausibility.term, plausibility.top_p, plausibility.min_p)
    if plausibility is not None and plausibility.term not in terms:
        raise APIError(400, f"emulate.plausibility names unknown term {plausibility.term!r}; "
                       f"terms are {terms}", "emulate.plausibility")
    if plausibility is not None and not 0 < plausibility.top_p <= 1:
        raise APIError(400, "emulate.plausibility top_p must be in (0, 1]", "emulate.plausibility")
    return weights or None, parameters or None, plausibility


def job_usage(job: Job, n: int) -> dict:
    """Prompt tokens once per prompt (not per choice); completion tokens over every row."""
    done = [c for c in job.completions if c is not None]
    prompt_tokens = sum(c.prompt_tokens for r, c in enumerate(job.completions)
                        if c is not None and r % n == 0)
    return usage(prompt_tokens, sum(len(c.token_ids) for c in done))


def response_body(chat: bool, job: Job, request_id: str, created: int, model: str, n: int,
                  weights: dict) -> dict:
    choose = chat_choice if chat else completion_choice
    choices = [choose(i, c.text, c.finish_reason) for i, c in enumerate(job.completions)]
    body = envelope("chat.completion" if chat else "text_completion", request_id, created,
                    model, choices, job_usage(job, n))
    body["emulate"] = {"weights": weights}
    return body


async def event_stream(chat: bool, job: Job, request_id: str, created: int, model: str, n: int,
                       include_usage: bool, on_close):
    """Server-sent events for a started job, ending with `data: [DONE]`; errors as an event."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(choices, usage_=None) -> str:
        body = envelope(kind, request_id, created, model, choices, usage_)
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    try:
        if chat:
            yield chunk([chat_delta(i, "", None, first=True) for i in range(job.rows)])
        remaining = job.rows
        while remaining:
            events = [await job.events.get()]
            while not job.events.empty():  # send what is ready in one write
                events.append(job.events.get_nowait())
            parts = []
            for event in events:
                if isinstance(event, BaseException):
                    error = APIError(500, f"generation failed: {event}", code="engine_error")
                    parts.append(f"data: {json.dumps(error.body())}\n\n")
                    remaining = 0
                    break
                row, text, finish_reason = event
                remaining -= finish_reason is not None
                if not text and finish_reason is None:
                    continue
                choice = (chat_delta(row, text, finish_reason, first=False) if chat
                          else completion_choice(row, text, finish_reason))
                parts.append(chunk([choice]))
            if parts:
                yield "".join(parts)
        if include_usage and job.done.done() and not job.done.exception():
            yield chunk([], job_usage(job, n))
        yield "data: [DONE]\n\n"
    finally:
        on_close()
