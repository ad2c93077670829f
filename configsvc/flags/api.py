"""HTTP API of flags (``/v1/flags...``) and of the route's flag (``/v1/agents/{agent}/route/flag``).

Bodies are strict (unknown fields refused by name); a flag file travels as text so that its hash
is the hash of the operator's file and its problems are reported with their paths. A flag file
may be up to ``MAX_FILE_BYTES`` (1 MiB), far over the API's general body limit: its route reads
a body of up to ``APPLY_BODY_BYTES``, which any file within the limit fits once JSON-escaped.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Final

from aiohttp import web

from configsvc import errors
from configsvc.flags.ops import FlagOps
from configsvc.http import (
    MAX_JSON_DEPTH,
    HistoryQuery,
    actor_of,
    agent_of,
    parse_object,
    read_body,
    read_document,
    reply,
    text,
)
from holdfast.flags.limits import MAX_FILE_BYTES
from holdfast.json_limits import JsonRefused, loads_bounded
from holdfast.keyspace import RecordError, Route
from holdfast.keyspace.keys import FLAG_KEY_RE

APPLY_FIELDS: Final = frozenset({"content", "source", "reason"})
REASON_FIELDS: Final = frozenset({"reason"})
ROUTE_FLAG_FIELDS: Final = frozenset({"flag", "reason"})
MAX_SOURCE_CHARS: Final = 200
# \uXXXX escaping (holdfastctl sends ASCII-only JSON) grows text up to 6x; plus the envelope.
APPLY_BODY_BYTES: Final = 6 * MAX_FILE_BYTES + 64 * 1024
FILE_TOO_LARGE: Final = (
    f"a flag file may be at most {MAX_FILE_BYTES} bytes (and 100 flags); split it into "
    "several files"
)


def _flag_key(value: str, param: str = "key") -> str:
    if not FLAG_KEY_RE.fullmatch(value):
        raise errors.InvalidRequest(
            f"invalid flag key {value!r:.140}: use 1-128 characters of A-Z, a-z, 0-9, '.', '_' "
            "or '-', starting with a letter or digit",
            param=param,
        )
    return value


def _content(obj: dict[str, Any]) -> tuple[Any, bytes]:
    content = obj.get("content")
    if not isinstance(content, str) or not content.strip():
        raise errors.InvalidRequest(
            "field 'content' must hold the flag file's text", param="content"
        )
    raw = content.encode()
    if len(raw) > MAX_FILE_BYTES:
        raise errors.BodyTooLarge(
            f"flag file is {len(raw)} bytes: {FILE_TOO_LARGE}", param="content"
        )
    try:
        return loads_bounded(content, MAX_JSON_DEPTH), raw
    except JsonRefused as exc:
        raise errors.InvalidFlagFile(
            f"flag file refused, nothing written: {exc}", param="content"
        ) from exc


class FlagsApi:
    def __init__(self, ops: FlagOps) -> None:
        self.ops = ops

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/flags", self.list_flags),
            web.post("/v1/flags/apply", self.apply),
            web.get("/v1/flags/{key}", self.get),
            web.get("/v1/flags/{key}/history", self.history),
            web.post("/v1/flags/{key}/enable", self.enable),
            web.post("/v1/flags/{key}/kill", self.kill),
            web.put("/v1/agents/{agent}/route/flag", self.set_route_flag),
            web.delete("/v1/agents/{agent}/route/flag", self.clear_route_flag),
        ]

    async def list_flags(self, request: web.Request) -> web.Response:
        revision, flags = await self.ops.list_flags()
        return reply({"revision": revision, "flags": [f.to_json() for f in flags]})

    async def get(self, request: web.Request) -> web.Response:
        found = await self.ops.get(_flag_key(request.match_info["key"]))
        return reply({"flag": found.to_json()})

    async def apply(self, request: web.Request) -> web.Response:
        too_large = f"request body is too large: {FILE_TOO_LARGE}"
        body = await read_document(request, limit=APPLY_BODY_BYTES, too_large=too_large)
        obj = parse_object(body, APPLY_FIELDS)
        document, raw = _content(obj)
        source = os.path.basename(text(obj, "source"))[:MAX_SOURCE_CHARS]
        applied = await self.ops.apply(
            document, source=source, raw=raw, actor=actor_of(request), reason=text(obj, "reason")
        )
        return reply(
            {
                "revision": applied.revision,
                "changed": applied.changed,
                "unchanged": applied.unchanged,
            }
        )

    async def history(self, request: web.Request) -> web.Response:
        query = HistoryQuery.parse(request.query)
        key = _flag_key(request.match_info["key"])
        found = await self.ops.history(key, query.limit)
        return reply(
            {
                "revision": found.revision,
                "flag": key,
                "entries": found.entries,
                "complete": found.complete,
            }
        )

    async def enable(self, request: web.Request) -> web.Response:
        return await self._state(request, "ENABLED")

    async def kill(self, request: web.Request) -> web.Response:
        return await self._state(request, "DISABLED")

    async def _state(self, request: web.Request, state: Any) -> web.Response:
        key = _flag_key(request.match_info["key"])
        reason = text(
            parse_object(await read_body(request), REASON_FIELDS, empty_ok=True), "reason"
        )
        result = await self.ops.set_state(key, state, actor_of(request), reason)
        return reply({"flag": result.to_json()})

    async def set_route_flag(self, request: web.Request) -> web.Response:
        obj = parse_object(await read_body(request), ROUTE_FLAG_FIELDS)
        flag = _flag_key(text(obj, "flag", required=True), "flag")
        await self.ops.get(flag)  # the flag must exist when it is named
        return await self._route_flag(request, flag, text(obj, "reason"))

    async def clear_route_flag(self, request: web.Request) -> web.Response:
        reason = text(
            parse_object(await read_body(request), REASON_FIELDS, empty_ok=True), "reason"
        )
        return await self._route_flag(request, "", reason)

    async def _route_flag(self, request: web.Request, flag: str, reason: str) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        service = self.ops.service

        def edit(current: Route | None) -> Route:
            if current is None:
                raise errors.AgentNotFound(
                    f"agent {agent!r} has no route; set one with `holdfastctl route set-stable`"
                )
            if current.flag == flag:
                return current
            try:
                return dataclasses.replace(
                    current, flag=flag, updated_at=service.clock(), updated_by=actor
                )
            except RecordError as exc:
                raise errors.InvalidRequest(str(exc), param="flag") from exc

        action = "route.set_flag" if flag else "route.clear_flag"
        change = await service.update_route(agent, edit, actor, action, reason)
        return reply(change.to_json())
