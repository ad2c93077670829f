"""One exchange through a translation: the agent's request written for the provider, the
provider's answer (whole, an error, or a stream event by event) written for the agent. Pure.

The filters keep reading what they read without a translation: the request through the agent's
dialect (prompts, contracts and budgets edit it before it is translated), and the answer as the
provider's dialect decodes it -- so budgets settle on the provider's own usage, contracts check
the calls the model made, signals and shadow see the neutral answer. The bytes the agent gets are
the translation's. A stream is translated as it arrives, each provider event parsed once for
the decoder and the reader both, nothing held beyond what the agent's next event needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final, Protocol

import orjson

from holdfast.dialects import (
    Answer,
    Dialect,
    ErrorKind,
    EventView,
    StreamDecoder,
    ToolCall,
    Usage,
    by_name,
)
from holdfast.dialects.base import label
from holdfast.dialects.sse import sse_data
from holdfast.json_limits import provider_json
from holdfast.translate import features
from holdfast.translate.neutral import BadAnswer, Opened, Reply, Segment, Untranslatable
from holdfast.translate.pairs import Pair, Reader, Writer

_DONE: Final = b"[DONE]"
TRANSLATED_HEADER: Final = "X-Holdfast-Translated"


class Observing(StreamDecoder, Protocol):
    """A dialect's stream decoder that also takes an event already parsed."""

    def observe(self, obj: dict[str, Any]) -> EventView: ...


def refuse_features(pair: Pair, body: dict[str, Any]) -> None:
    """Untranslatable for a field ``pair`` does not know, or the first feature ``body`` uses
    that ``pair`` cannot carry."""
    name = features.unknown(pair.agent, body)
    if name is not None:
        raise Untranslatable(
            f"the request has a field {name!r:.60} that the translation into "
            f"{_title(pair.provider)} does not know, so it cannot tell what it would change",
            name,
        )
    for feature in features.CATALOGUE.get(pair.agent, ()):
        if feature.name in pair.refuses and feature.used(body):
            raise Untranslatable(
                f"the request asks for {feature.what}, which {_title(pair.provider)} cannot "
                "express",
                feature.param,
            )


def _title(dialect: str) -> str:
    return {
        "openai.chat": "OpenAI chat completions",
        "anthropic.messages": "Anthropic Messages",
        "openai.responses": "OpenAI Responses",
    }.get(dialect, dialect)


def error_kind(status: int) -> ErrorKind:
    if status == 404:
        return "not_found"
    if status == 429:
        return "quota"
    if 400 <= status < 500:
        return "invalid_request"
    return "upstream"


def answer_view(reply: Reply) -> Answer:
    """The neutral answer filters read, from the provider's answer as the translation read it."""
    calls = tuple(ToolCall(0, i, c.name, c.arguments) for i, c in enumerate(reply.calls))
    chars = len(reply.text) + sum(len(c.arguments) for c in reply.calls)
    usage = reply.tokens.usage if reply.tokens is not None else None
    refused = reply.stop == "refusal" or bool(reply.refusal)
    said = label(reply.said)
    return Answer(
        reply.text,
        calls,
        usage,
        refused,
        math.ceil(chars / 4),
        finish_reasons=(said,) if said else (),
        response_model=label(reply.model),
        response_id=label(reply.id),
    )


class Translation:
    """The agent's request and the provider's answer of one exchange, through ``pair``."""

    __slots__ = ("agent", "body", "pair", "provider")

    def __init__(self, pair: Pair, body: dict[str, Any]) -> None:
        self.pair = pair
        self.body = body  # the agent's request as the filters left it
        self.agent: Dialect = by_name(pair.agent)
        self.provider: Dialect = by_name(pair.provider)

    @property
    def upstream_path(self) -> str:
        return self.provider.upstream_path

    def request(self, base_url: str) -> dict[str, Any]:
        """The provider's request (for the model the agent's body names by now: the release's);
        Untranslatable names what cannot be carried."""
        refuse_features(self.pair, self.body)
        conversation = self.pair.read_request(self.body)
        return self.pair.write_request(conversation, base_url)

    def answer(self, data: bytes) -> tuple[Answer, bytes]:
        """A whole 2xx answer: its view for the filters and its bytes for the agent. BadAnswer
        when it is not an answer of the provider's API; Untranslatable when the agent's API
        cannot carry it."""
        obj = provider_json(data, f"translate.{self.pair.provider}.body")
        reply = self.pair.read_answer(obj)
        return answer_view(reply), orjson.dumps(self.pair.write_answer(reply, self.body))

    def error(self, status: int, data: bytes) -> bytes:
        """A provider's error answer in the agent's error shape: its message and code kept."""
        obj = provider_json(data, f"translate.{self.pair.provider}.error")
        message, code = self.pair.read_error(obj)
        message = message or f"the provider answered HTTP {status}"
        body = self.agent.error_body(message, error_kind(status), code or "upstream_error")
        return orjson.dumps(body)

    def stream(self) -> StreamTranslation:
        decoder = self.provider.stream_decoder()
        assert hasattr(decoder, "observe"), f"{self.provider.name} decoders take parsed events"
        writer = self.pair.writer(self.body)
        return StreamTranslation(decoder, self.pair.reader(), writer, self.pair.provider)


class StreamTranslation:
    """A provider's stream, event by event: ``feed`` gives, for each provider event, what the
    filters see (the provider decoder's view) with the bytes the agent gets for it. Bytes that
    only carry usage the agent's body asks for (OpenAI chat's include_usage chunk) come apart,
    on a view marked ``usage_only``, exactly as the chat dialect's own decoder marks them."""

    __slots__ = ("_opened", "_reader", "_usage", "_where", "_writer", "decoder", "provider")

    def __init__(self, decoder: Any, reader: Reader, writer: Writer, provider: str) -> None:
        self.decoder: Observing = decoder
        self.provider = provider  # the provider's dialect (its name)
        self._reader = reader
        self._writer = writer
        self._opened = False
        self._usage: Usage | None = None
        self._where = f"translate.{provider}.event"

    def feed(self, event: bytes) -> list[tuple[EventView, bytes]]:
        data = sse_data(event)
        if data is None:
            return []
        data = data.strip()
        if data == _DONE:
            view = self.decoder.feed(event)
            neutral = self._reader.read(None)
        elif data.startswith(b"{"):
            obj = provider_json(data, self._where)
            if not isinstance(obj, dict):
                return []
            view = self.decoder.observe(obj)
            if view.foreign:
                return [(view, b"")]
            neutral = self._reader.read(obj)
        else:
            return []
        if view.usage is not None:
            self._usage = view.usage
        segments: list[Segment] = []
        write: Callable[[Any], list[Segment]] = self._writer.write
        for e in neutral:
            if not self._opened:
                self._opened = True
                if not isinstance(e, Opened):  # a provider that skipped its opening event
                    segments += write(Opened("", ""))
            segments += write(e)
        return self._pair_up(view, segments)

    def _pair_up(self, view: EventView, segments: list[Segment]) -> list[tuple[EventView, bytes]]:
        if len(segments) == 1 and not segments[0][1]:
            return [(view, segments[0][0])]  # the common case: one event in, one out
        out: list[tuple[EventView, bytes]] = []
        pending: list[bytes] = []
        first: EventView | None = view
        for data, usage_only in segments:
            if not usage_only:
                pending.append(data)
                continue
            if pending or first is not None:
                out.append((first or EventView(), b"".join(pending)))
                first, pending = None, []
            out.append((EventView(usage=self._usage, usage_only=True), data))
        if pending or first is not None:
            out.append((first or EventView(), b"".join(pending)))
        return out


__all__ = [
    "TRANSLATED_HEADER",
    "BadAnswer",
    "StreamTranslation",
    "Translation",
    "Untranslatable",
    "answer_view",
    "error_kind",
    "refuse_features",
]
