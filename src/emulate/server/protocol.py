"""The wire format: OpenAI-style requests, responses, stream chunks and errors.

Requests are validated strictly (a string where a number belongs is an error, not a guess).
Fields vLLM adds (`top_k`, `min_p`, `ignore_eos`) are accepted; fields this server cannot honour
(log-probs, penalties, tools) are refused by name rather than silently ignored. The composition's
knobs travel in an `emulate` object, which the official client sends through `extra_body`:

    {"emulate": {"parameters": {"beta": 1.5}, "weights": {"small_base": -0.5},
                 "plausibility": {"term": "large_base", "top_p": 0.9},
                 "speculative": {"draft": "small_helpful", "k": 4}}}

`{"emulate": {"beta": 1.5}}` is shorthand: a key naming a parameter sets it, one naming a term
sets that term's weight.
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class APIError(Exception):
    """An error answered as OpenAI's `{"error": {message, type, param, code}}`."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, type: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _error_type(status)
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def _error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class PlausibilityOptions(_Strict):
    term: str
    top_p: float = Field(0.9, gt=0, le=1)
    min_p: float = Field(0.0, ge=0, lt=1)


class SpeculativeOptions(BaseModel):
    """Exact speculative decoding for this request (`true` takes the defaults)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    draft: str | None = None  # a term or a formula of terms; default: the small tuned term
    k: int | None = Field(None, ge=1, le=16)  # drafts per round to start from
    # adapt k to the measured acceptance and round times (default; a round may then draft
    # none where drafting does not pay at its row count) or keep it
    adaptive: bool | None = None

    def options(self) -> dict:
        return self.model_dump(exclude_none=True)


class EmulateOptions(BaseModel):
    """Per-request composition knobs; extra keys are `{name: number}` shorthand."""

    model_config = ConfigDict(strict=True, extra="allow", allow_inf_nan=False)

    parameters: dict[str, float] = Field(default_factory=dict)
    weights: dict[str, float] = Field(default_factory=dict)
    plausibility: str | PlausibilityOptions | None = None
    speculative: bool | SpeculativeOptions | None = None

    @model_validator(mode="after")
    def _shorthand_numbers(self):
        for key, value in (self.model_extra or {}).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"emulate.{key} must be a finite number (a parameter value or "
                                 f"a term weight), got {value!r:.40}")
        return self


class StreamOptions(_Strict):
    include_usage: bool = False


class SamplingFields(_Strict):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)  # vLLM: -1 or 0 is off
    min_p: float | None = Field(None, ge=0, lt=1)
    ignore_eos: bool = False  # vLLM: decode max_tokens tokens whatever comes
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    emulate: EmulateOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, stop):
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > 16:
            raise ValueError("at most 16 stop strings")
        if any(not s for s in stops):
            raise ValueError("stop strings must be non-empty")
        if any(len(s) > 256 for s in stops):
            raise ValueError("stop strings must be at most 256 characters")
        return stops

    def unsupported(self) -> list[str]:
        """Fields set to values this server cannot honour."""
        refused = [name for name in ("presence_penalty", "frequency_penalty")
                   if getattr(self, name) not in (None, 0, 0.0)]
        if self.logit_bias:
            refused.append("logit_bias")
        return refused


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _text_prompts(cls, prompt):
        if isinstance(prompt, list):
            if not prompt:
                raise ValueError("give at least one prompt")
            if any(isinstance(p, (int, list)) and not isinstance(p, bool) for p in prompt):
                raise ValueError("token-id prompts are not supported; send text")
        return prompt

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> list[str]:
        refused = super().unsupported()
        if self.echo:
            refused.append("echo")
        if self.best_of not in (None, self.n):
            refused.append("best_of")
        if self.suffix:
            refused.append("suffix")
        if self.logprobs is not None:
            refused.append("logprobs")
        return refused


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> list[str]:
        refused = super().unsupported()
        if self.logprobs or self.top_logprobs:
            refused.append("logprobs")
        if self.tools:
            refused.append("tools")
        if self.tool_choice not in (None, "none"):
            refused.append("tool_choice")
        if self.response_format not in (None, {"type": "text"}):
            refused.append("response_format")
        return refused


# Responses. Plain builders: a streamed token costs one small dict and one json.dumps.


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                 total_tokens=prompt_tokens + completion_tokens).model_dump()


def completion_choice(index: int, text: str, finish_reason: str | None) -> dict:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def chat_choice(index: int, text: str, finish_reason: str | None) -> dict:
    return {"index": index, "message": {"role": "assistant", "content": text},
            "logprobs": None, "finish_reason": finish_reason}


def chat_delta(index: int, text: str, finish_reason: str | None, first: bool) -> dict:
    delta = {"role": "assistant", "content": text} if first else {"content": text}
    if finish_reason is not None and not text and not first:
        delta = {}
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def envelope(kind: str, request_id: str, created: int, model: str, choices: list,
             usage_: dict | None = None) -> dict:
    """`kind` is text_completion, chat.completion or chat.completion.chunk."""
    body = {"id": request_id, "object": kind, "created": created, "model": model,
            "system_fingerprint": None, "choices": choices}
    if usage_ is not None or kind != "chat.completion.chunk":
        body["usage"] = usage_
    return body


def model_card(name: str, composition, description: str = "") -> dict:
    return {
        "id": name, "object": "model", "created": now(), "owned_by": "emulate",
        "emulate": {
            "formula": composition.formula, "terms": list(composition.term_names),
            "parameters": dict(composition.parameters), "description": description,
        },
    }
