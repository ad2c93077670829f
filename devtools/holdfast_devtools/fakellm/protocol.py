"""OpenAI wire format of the fake upstream: request validation, response bodies, SSE frames.

Pure (no I/O): JSON in, dataclasses out; dataclasses in, JSON-ready dicts or bytes out.
"""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from holdfast_devtools.fakellm.behaviour import Behaviour
from holdfast_devtools.fakellm.generate import (
    ChatRequest,
    Reply,
    asks_for_json,
    count_tokens,
    message_text,
    prompt_tokens,
)

DEFAULT_EMBEDDING_DIMENSIONS: Final = 16
MAX_EMBEDDING_DIMENSIONS: Final = 4096
FINGERPRINT: Final = "fp_holdfast_fake"
DONE_FRAME: Final = b"data: [DONE]\n\n"


class ApiError(Exception):
    """A request answered with an error in OpenAI's shape, from validation or an injected fault."""

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = "invalid_value",
        *,
        status: int = 400,
        kind: str = "invalid_request_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.param, self.code, self.status, self.kind = param, code, status, kind
        self.headers = headers

    def body(self) -> dict[str, object]:
        error = {"message": str(self), "type": self.kind, "code": self.code, "param": self.param}
        return {"error": error}


def injected_error(behaviour: Behaviour) -> ApiError:
    status = behaviour.error_status
    if status == 429:
        retry = {"Retry-After": str(behaviour.retry_after_s)}
        code, kind = "rate_limit_exceeded", "rate_limit_error"
        return ApiError("injected rate limit", None, code, status=429, kind=kind, headers=retry)
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return ApiError(f"injected error {status}", None, "injected_error", status=status, kind=kind)


def model_of(body: Mapping[str, object]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("model is required", "model", "missing_required_parameter")
    return model


def _opt_int(body: Mapping[str, object], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ApiError(f"{name} must be a positive integer", name)
    return value


def parse_chat(body: object) -> ChatRequest:
    """The request's model, reply key, prompt tokens and options; ApiError (400) if invalid."""
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object", None)
    model = model_of(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty array", "messages")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ApiError("each message must be an object with a role", "messages")
    if body.get("n") not in (None, 1):
        raise ApiError("only n=1 is supported", "n", "unsupported_value")
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage")
    max_completion = _opt_int(body, "max_completion_tokens")
    user_text = next(
        (message_text(m.get("content")) for m in reversed(messages) if m["role"] == "user"), ""
    )
    return ChatRequest(
        model=model,
        user_text=user_text,
        prompt_tokens=prompt_tokens(messages),
        stream=body.get("stream") is True,
        include_usage=include_usage is True,
        max_tokens=max_completion if max_completion is not None else _opt_int(body, "max_tokens"),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        reply_json=asks_for_json(messages),
    )


def _tools(tools: object) -> dict[str, object]:
    if tools is None:
        return {}
    declared: dict[str, object] = {}
    for tool in tools if isinstance(tools, list) else [None]:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ApiError("tools must be an array of {type, function: {name}}", "tools")
        declared[function["name"]] = function.get("parameters", {})
    return declared


def _tool_choice(choice: object) -> str | None:
    if choice is None or choice in ("none", "auto", "required"):
        return choice
    function = choice.get("function") if isinstance(choice, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return str(function["name"])
    raise ApiError("tool_choice must be none, auto, required or a function", "tool_choice")


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingRequest:
    model: str
    inputs: tuple[str, ...]
    dimensions: int
    base64: bool  # the openai SDK asks for base64 unless told otherwise

    @property
    def prompt_tokens(self) -> int:
        return sum(count_tokens(text) for text in self.inputs)


def parse_embeddings(body: object) -> EmbeddingRequest:
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object", None)
    model = model_of(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
        raise ApiError("input must be a string or a non-empty array of strings", "input")
    dimensions = _opt_int(body, "dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    if dimensions > MAX_EMBEDDING_DIMENSIONS:
        raise ApiError(f"dimensions must be at most {MAX_EMBEDDING_DIMENSIONS}", "dimensions")
    encoding = body.get("encoding_format")
    if encoding not in (None, "float", "base64"):
        raise ApiError("encoding_format must be float or base64", "encoding_format")
    return EmbeddingRequest(
        model=model, inputs=tuple(inputs), dimensions=dimensions, base64=encoding == "base64"
    )


def usage(prompt: int, completion: int) -> dict[str, int]:
    total = prompt + completion
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def completion_body(
    completion_id: str, request: ChatRequest, reply: Reply, *, with_usage: bool
) -> dict[str, object]:
    choice = {
        "index": 0,
        "message": reply.message,
        "logprobs": None,
        "finish_reason": reply.finish_reason,
    }
    body: dict[str, object] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "system_fingerprint": FINGERPRINT,
        "choices": [choice],
    }
    if with_usage:
        body["usage"] = usage(request.prompt_tokens, reply.completion_tokens)
    return body


def embeddings_body(
    request: EmbeddingRequest, vectors: Sequence[list[float]], *, with_usage: bool
) -> dict[str, object]:
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, as_base64=request.base64)}
        for i, v in enumerate(vectors)
    ]
    body: dict[str, object] = {"object": "list", "data": data, "model": request.model}
    if with_usage:
        tokens = request.prompt_tokens
        body["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return body


def _encode(vector: list[float], *, as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    # Little-endian float32, which is what OpenAI sends and the SDK decodes.
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


class ChunkFrames:
    """SSE frames of one stream; the id/created/model head is encoded once, not per token."""

    def __init__(self, completion_id: str, model: str) -> None:
        head = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }
        self._head = b"data: " + json.dumps(head).encode()[:-1]

    def delta(self, delta: Mapping[str, object], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._head + b', "choices": [' + json.dumps(choice).encode() + b"]}\n\n"

    def usage(self, prompt: int, completion: int) -> bytes:
        body = json.dumps(usage(prompt, completion)).encode()
        return self._head + b', "choices": [], "usage": ' + body + b"}\n\n"
