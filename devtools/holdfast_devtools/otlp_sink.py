"""A tiny OTLP/HTTP traces receiver for tests, the bench and the demo: ``POST /v1/traces`` with
protobuf (or gzip'd protobuf) bodies, decoded with ``opentelemetry-proto`` into plain spans.

It answers as a collector does (200 with an empty ``ExportTraceServiceResponse``), so the
sidecar's real exporter talks to it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

PATH: Final = "/v1/traces"
MAX_BODY: Final = 32 * 1024 * 1024
PROTOBUF: Final = "application/x-protobuf"
# OTLP's span kinds (opentelemetry.proto.trace.v1.Span.SpanKind)
INTERNAL, SERVER, CLIENT = 1, 2, 3
STATUS_ERROR: Final = 2


def value_of(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value_of(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes_of(v.kvlist_value.values)
    return getattr(v, which) if which else None


def attributes_of(kvs: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in kvs if isinstance(kv, KeyValue)}


@dataclass(frozen=True)
class CollectedSpan:
    name: str
    kind: int
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int
    start_ns: int
    end_ns: int


@dataclass
class OtlpSink:
    spans: list[CollectedSpan] = field(default_factory=list)
    exports: int = 0
    _runner: web.AppRunner | None = None
    _port: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        """The traces endpoint, as ``--otlp-endpoint`` takes it."""
        return f"http://127.0.0.1:{self._port}{PATH}"

    async def start(self) -> OtlpSink:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_post(PATH, self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _export(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            raw = gzip.decompress(raw)
        message = ExportTraceServiceRequest()
        message.ParseFromString(raw)
        for rs in message.resource_spans:
            resource = attributes_of(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    self.spans.append(
                        CollectedSpan(
                            name=s.name,
                            kind=s.kind,
                            trace_id=s.trace_id.hex(),
                            span_id=s.span_id.hex(),
                            parent_span_id=s.parent_span_id.hex(),
                            attributes=attributes_of(s.attributes),
                            resource=resource,
                            scope=ss.scope.name,
                            status_code=s.status.code,
                            start_ns=s.start_time_unix_nano,
                            end_ns=s.end_time_unix_nano,
                        )
                    )
        self.exports += 1
        self._arrived.set()
        body = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type=PROTOBUF)

    async def wait_for(
        self, predicate: Callable[[CollectedSpan], bool], *, count: int = 1, within: float = 10.0
    ) -> list[CollectedSpan]:
        """The spans matching ``predicate`` once at least ``count`` have arrived."""
        deadline = time.monotonic() + within
        while True:
            found = [s for s in self.spans if predicate(s)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = sorted({s.name for s in self.spans})
                raise AssertionError(f"{len(found)}/{count} spans arrived; names seen: {names}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
