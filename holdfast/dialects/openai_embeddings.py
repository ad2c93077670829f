"""OpenAI embeddings (``POST /v1/embeddings``): ``model`` and ``input`` in, vectors and usage out.

Never streamed, no output cap, no tools or system text. The prompt estimate is the ``input``'s
JSON bytes (``bytes``, an upper bound), its texts' tokens for a model whose tokenizer ships
offline (``tokens``: exact -- token-id inputs are counted as given -- else bytes), or 1 token
per 4 characters plus 1 per item (``chars``).
"""

from __future__ import annotations

import math
from typing import Any, Final

from holdfast.dialects import estimate
from holdfast.dialects.base import (
    Answer,
    DeclaredTool,
    ErrorKind,
    Estimator,
    RequestRefused,
    SystemSlot,
)
from holdfast.dialects.openai_chat import ChatStream, error_body, label, require_model, usage_of
from holdfast.dialects.sse import data_event
from holdfast.json_limits import provider_json

NAME: Final = "openai.embeddings"


def check_input(value: object) -> None:
    """OpenAI's ``input``: a non-empty string, or a non-empty list of strings or of token
    arrays (lists of integers)."""
    ok = isinstance(value, str) and bool(value)
    if isinstance(value, list) and value:
        ok = (
            all(isinstance(v, str) and v for v in value)
            or all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or all(
                isinstance(v, list)
                and v
                and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
                for v in value
            )
        )
    if not ok:
        raise RequestRefused(
            "'input' is required: a non-empty string, or a non-empty list of strings or of "
            "token arrays",
            "input",
        )


def _input_tokens(encoding: estimate.Encoding, parts: object) -> int:
    """An embeddings input: a text, token ids, or a list of either."""
    items = parts if isinstance(parts, list) and not _token_ids(parts) else [parts]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += estimate.count(encoding, item)
        elif isinstance(item, list) and _token_ids(item):
            total += len(item)
        else:
            total += estimate.json_bytes(item)
    return total


def _token_ids(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


class EmbeddingsRequest:
    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    @property
    def model(self) -> str:
        return str(self.body["model"])

    def set_model(self, model: str) -> None:
        self.body["model"] = model

    @property
    def stream(self) -> bool:
        return False

    @property
    def session_hint(self) -> str | None:
        user = self.body.get("user")
        return user if isinstance(user, str) and user else None

    def output_cap(self) -> tuple[int | None, int]:
        return None, 1

    def write_output_cap(self, cap: int, base_url: str) -> str:
        raise RequestRefused("embeddings take no output cap")

    def ask_stream_usage(self) -> bool:
        return True

    def prompt_estimate(self, estimator: Estimator) -> int:
        parts: object = self.body.get("input", "")
        if estimator == "tokens":
            encoding = estimate.tokenizer(self.model)
            if encoding is not None:
                return _input_tokens(encoding, parts)
        if estimator in ("bytes", "tokens"):
            return estimate.json_bytes(parts)
        items = parts if isinstance(parts, list) else [parts]
        return sum(math.ceil(len(str(i)) / 4) + 1 for i in items)

    def text_chars(self) -> int:
        return 0

    def last_user_text(self, limit: int) -> str:
        return ""

    def declared_tools(self) -> list[DeclaredTool]:
        return []

    @property
    def system_field(self) -> str:
        return "input"

    def system_slots(self) -> list[SystemSlot]:
        return []

    def set_system(self, position: int, text: str) -> None:
        raise RequestRefused("embeddings have no system text")

    def insert_system(self, text: str) -> None:
        raise RequestRefused("embeddings have no system text")

    def shadow_copy(self, model: str) -> dict[str, Any]:
        return {**self.body, "model": model}


class Embeddings:
    name = NAME
    operation = "embeddings"
    provider_api = "openai"
    paths: tuple[str, ...] = ("/v1/embeddings",)
    upstream_path = "/embeddings"
    sse_errors = False
    session_headers: tuple[str, ...] = ()
    checks_answers = False

    def parse(self, body: dict[str, Any]) -> EmbeddingsRequest:
        require_model(body)
        check_input(body.get("input"))
        return EmbeddingsRequest(body)

    def decode_body(self, body: bytes) -> Answer | None:
        obj = provider_json(body, "openai.embeddings.body")
        if not isinstance(obj, dict):
            return None
        usage = usage_of(obj, "openai.embeddings.body")
        return Answer("", (), usage, False, 0, response_model=label(obj.get("model")))

    def stream_decoder(self) -> ChatStream:
        return ChatStream()  # never streamed; a provider that streams anyway is read as chat

    def error_body(
        self, message: str, kind: ErrorKind, code: str, param: str | None = None
    ) -> dict[str, Any]:
        return error_body(message, kind, code, param)

    def stream_error(self, message: str, kind: ErrorKind, code: str) -> bytes:
        return data_event(error_body(message, kind, code))


DIALECT: Final = Embeddings()
