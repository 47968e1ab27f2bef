"""The HTTP layer: an OpenAI-compatible FastAPI app over a Batcher.

Every request body is read by hand (size-capped), parsed as JSON and validated strictly, so
each failure gets OpenAI's error JSON with a 4xx status and the offending field in `param`;
nothing a client sends can stop the server. A client that goes away (mid-stream, while queued,
or while waiting for a full response) cancels its rows at once.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from emulate.common.errors import (
    EmulateError,
    FormulaError,
    GenerationParamsError,
    PromptTooLongError,
)
from emulate.compose.checks import EmptyPromptError
from emulate.server.batcher import Batcher
from emulate.server.config import ServerSettings
from emulate.server.engine_process import EngineGone, EngineProcess
from emulate.server.jobs import Job, Overloaded
from emulate.server.protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    model_card,
    new_id,
    now,
)
from emulate.server.translate import Served, build_rows, event_stream, response_body

log = logging.getLogger("emulate.server")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def create_app(served: dict[str, Served], settings: ServerSettings | None = None,
               api_key: str | None = None, engine: EngineProcess | None = None) -> FastAPI:
    """An app serving `served` (name -> Served); with `api_key`, /v1 requires the bearer key.

    With `engine` (an EngineProcess over the config `served` was built from), the models decode
    in that process of their own (engine_process.py), and `served` may hold their structure
    only; without it, they decode on a worker thread of this process."""
    if not served:
        raise ValueError("serve at least one composition")
    settings = settings or ServerSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if engine is not None:
            batcher = engine
            await batcher.start()
        else:
            batcher = Batcher({name: s.composition for name, s in served.items()},
                              settings.max_batch, settings.max_cohorts, settings.max_queue,
                              settings.threads, settings.admit_wait)
            batcher.start()
        app.state.batcher = batcher
        yield
        await batcher.close()

    app = FastAPI(title="emulate", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.served = served

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def _dropped(request: Request, exc: ClientDisconnect):
        # A client that hangs up mid-upload is no server error: nothing to log, no one to answer.
        log.debug("client left during the upload to %s", request.url.path)
        return JSONResponse({}, status_code=499)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"no route {request.method} {request.url.path}",
                   405: f"method {request.method} is not allowed on {request.url.path}"}
        error = APIError(exc.status_code, message.get(exc.status_code, str(exc.detail)))
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        error = validation_error(exc.errors())
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        error = APIError(500, f"internal error: {type(exc).__name__}", code="internal_error")
        return JSONResponse(error.body(), status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                 api_key.encode()):
            raise APIError(401, "missing or invalid API key; send 'Authorization: Bearer KEY'",
                           code="invalid_api_key",
                           headers={"WWW-Authenticate": "Bearer"})

    @app.get("/health")
    async def health(request: Request):
        batcher = request.app.state.batcher
        if not batcher.alive:
            raise APIError(503, "the engine process exited; restart the server",
                           code="engine_unavailable")
        return {"status": "ok", "models": list(served), **batcher.metrics()}

    @app.get("/v1/models")
    async def list_models(request: Request):
        authorize(request)
        cards = [model_card(name, s.composition, s.spec.description) for name, s in served.items()]
        return {"object": "list", "data": cards}

    @app.get("/v1/models/{model_id}")
    async def get_model(model_id: str, request: Request):
        authorize(request)
        return model_card(model_id, lookup(model_id).composition, lookup(model_id).spec.description)

    def lookup(name: str | None) -> Served:
        if name is None:
            return next(iter(served.values()))
        if name not in served:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                           f"{sorted(served)}", "model", "model_not_found")
        return served[name]

    async def handle(request: Request, kind: type) -> object:
        authorize(request)
        body = await read_body(request, settings.max_body_bytes)
        try:
            data = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise APIError(400, f"the request body is not valid JSON: {exc}",
                           code="invalid_json") from None
        try:
            req = kind.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc.errors()) from None
        chat = kind is ChatRequest
        target = lookup(req.model)
        name = req.model or target.name
        prompts, params, speculative = build_rows(req, target, settings.max_batch,
                                                  settings.max_n, settings.max_prompts)
        batcher: Batcher = request.app.state.batcher
        job = Job(name, prompts, params, speculative)
        prompt_field = "messages" if chat else "prompt"
        try:
            await until(request, batcher.submit(job), batcher, job)
            await until(request, asyncio.shield(job.started), batcher, job,
                        timeout=settings.queue_timeout)
        except ClientGone:
            return JSONResponse({}, status_code=499)
        except TimeoutError:
            batcher.cancel(job)
            raise APIError(503, f"no batch slot within {settings.queue_timeout:g} s; retry",
                           code="queue_timeout", headers={"Retry-After": "1"}) from None
        except Overloaded as exc:
            raise APIError(503, str(exc), code="overloaded",
                           headers={"Retry-After": str(exc.retry_after)}) from None
        except EngineGone as exc:
            raise APIError(503, str(exc), code="engine_unavailable") from None
        except PromptTooLongError as exc:
            raise APIError(400, str(exc), prompt_field, "context_length_exceeded") from None
        except (GenerationParamsError, FormulaError, EmptyPromptError) as exc:
            # (a formula here is a speculative draft: the composition's own was checked)
            param = prompt_field if isinstance(exc, EmptyPromptError) else "emulate"
            raise APIError(400, str(exc), param) from None
        except EmulateError as exc:
            raise APIError(400, str(exc), prompt_field) from None
        except ValueError as exc:  # e.g. a chat template refusing the conversation
            raise APIError(400, f"cannot render the prompt: {exc}", prompt_field) from None
        request_id, created = new_id("chatcmpl" if chat else "cmpl"), now()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            events = event_stream(chat, job, request_id, created, name, req.n, include_usage,
                                  lambda: batcher.cancel(job))
            return EventStream(events, on_close=lambda: batcher.cancel(job))
        try:
            await until(request, asyncio.shield(job.done), batcher, job)
        except ClientGone:
            return JSONResponse({}, status_code=499)
        except EmulateError as exc:
            raise APIError(500, f"generation failed: {exc}", code="engine_error") from None
        weights = target.composition.resolve_weights(params[0])
        return response_body(chat, job, request_id, created, name, req.n, weights)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, CompletionRequest)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, ChatRequest)

    return app


class EventStream(StreamingResponse):
    """SSE that always watches for the client leaving (and then cancels its rows at once)."""

    media_type = "text/event-stream"

    def __init__(self, content, on_close):
        super().__init__(content, headers={"Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        self.on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    await self.stream_response(send)
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            self.on_close()


async def until(request: Request, awaitable, batcher: Batcher, job: Job, timeout=None):
    """Await `awaitable` unless the client disconnects first (then cancel the job)."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    if watcher in done:
        batcher.cancel(job)
        task.cancel()
        raise ClientGone
    raise TimeoutError


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise APIError(400, "invalid Content-Length header")
        if int(declared) > limit:
            raise APIError(413, f"the request body is {declared} bytes; the limit is {limit}",
                           code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"the request body exceeds the limit of {limit} bytes",
                           code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid JSON number")


def validation_error(errors: list[dict]) -> APIError:
    """The first pydantic error as a 400 naming the field (`messages[0].content`). For a
    field that may take several shapes, the error from inside the shape the input has (the
    deepest one) says more than "should be a valid boolean"."""

    def parts_of(error: dict) -> list:
        return [p for p in error.get("loc", ()) if p != "body" and not _union_tag(p)]

    field = parts_of(errors[0])
    first = max((e for e in errors if parts_of(e)[: len(field)] == field),
                key=lambda e: len(parts_of(e)))
    parts = parts_of(first)
    param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    message = first.get("msg", "invalid value")
    if first.get("type") == "model_type" and not parts:
        return APIError(400, "the request body must be a JSON object")
    if first.get("type") == "missing":
        return APIError(400, f"{param} is required", param or None, "missing_required_parameter")
    received = first.get("input")
    shown = "" if isinstance(received, (dict, list)) else f" (got {received!r:.60})"
    return APIError(400, f"{param or 'body'}: {message}{shown}", param or None,
                    "invalid_value")


def _union_tag(part) -> bool:
    """pydantic names union members in error locations ('str', 'list[TextPart]'); drop them."""
    return isinstance(part, str) and (
        "[" in part or part in {"str", "int", "float", "bool", "list", "dict", "none"}
        or part[:1].isupper() or part.startswith("function-")
    )
