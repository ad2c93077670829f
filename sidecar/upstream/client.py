"""Talking to providers: one pooled HTTP client, credentials from the environment, typed errors.

Nothing from the agent's own headers is forwarded but what the release's provider kind names
(holdfast.providers: Anthropic's ``anthropic-beta`` and ``anthropic-version``); the provider key
comes from the environment variable that the release names and goes where its kind wants it
(``Authorization: Bearer``, ``x-api-key``), so the agent's own key (and any key in etcd) never
reaches a provider. The agent's query string, when it sent one, goes along unchanged.

When the sidecar's drain timeout runs out, ``cut`` ends every provider call still in flight:
one waiting for its answer gets 503 ``overloaded`` (Retry-After), a stream being relayed breaks
with ``SidecarShutdown`` and the relay reports that in-band.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import aiohttp
from aiohttp.payload import BytesPayload
from yarl import URL

from holdfast import __version__
from holdfast.keyspace import Release
from holdfast.net.guard import HostRefused
from holdfast.net.resolver import guarded_connector, refused_reason
from holdfast.providers import ProviderKind, UnknownProvider, provider
from sidecar.errors import (
    ProviderKeyMissing,
    ShuttingDown,
    UpstreamHostRefused,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from sidecar.settings import SidecarSettings

USER_AGENT: Final = f"holdfast-sidecar/{__version__}"
# Provider response headers an agent's SDK may act on (rate limits, retry hints).
RELAYED_RESPONSE_HEADERS: Final = ("retry-after", "openai-processing-ms", "x-request-id")
RELAYED_PREFIXES: Final = ("x-ratelimit-",)
CONNECT_ERRORS: Final = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError)
# A provider key is one token of visible ASCII; anything else (a trailing newline from a secret
# file) could never be sent as a header and must not fail deep inside the HTTP client.
_KEY_CHARS: Final = frozenset(chr(c) for c in range(0x21, 0x7F))
CUT: Final = "holdfast: the drain timeout ran out"  # the cancel message of a cut call
# Calls prepared per (release, path): releases change a few times a day, requests many times a
# second. Bounded: a config with more releases than this only re-prepares.
MAX_PREPARED: Final = 256


class SidecarShutdown(aiohttp.ClientConnectionError):
    """Set on provider streams still open when the drain timeout runs out (``Upstream.cut``)."""


def relayed_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        low = name.lower()
        if low in RELAYED_RESPONSE_HEADERS or low.startswith(RELAYED_PREFIXES):
            out["X-Upstream-Request-Id" if low == "x-request-id" else name] = value
    return out


class Upstream:
    def __init__(self, settings: SidecarSettings, environ: Mapping[str, str]) -> None:
        self._settings = settings
        self._environ = environ
        self._session: aiohttp.ClientSession | None = None
        self.policy = settings.limits.host_policy()
        # Calls in flight, so that ``cut`` can end them: the deadline of each stream still
        # waiting for its head, the task of each whole answer still waiting, and each answer
        # whose body is still being read.
        self._waiting: set[asyncio.Timeout] = set()
        self._waiting_tasks: set[asyncio.Task[object]] = set()
        self._reading: set[aiohttp.ClientResponse] = set()
        self.cut_off = False
        # What a call needs that depends only on its release and path: the URL, parsed and
        # checked against the host policy once; the headers that carry no request id.
        # Keyed by the release object (records are immutable; a changed release is a new one)
        # and held with it, so that an id reused after garbage collection never matches.
        self._prepared: dict[
            tuple[int, str, str], tuple[Release, URL, dict[str, str], tuple[str, ...]]
        ] = {}
        s = settings
        self._stream_timeout = aiohttp.ClientTimeout(
            sock_connect=s.connect_timeout, sock_read=s.stream_idle_timeout
        )
        self._answer_timeout = aiohttp.ClientTimeout(
            total=s.request_timeout, sock_connect=s.connect_timeout
        )

    async def start(self) -> None:
        # DNS answers are checked against the policy on every (re)resolution: no rebinding.
        connector = guarded_connector(
            self.policy, limit=0, ttl_dns_cache=60, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def cut(self) -> int:
        """End every provider call in flight and refuse new ones; returns how many were cut."""
        self.cut_off = True
        now = asyncio.get_running_loop().time()
        for deadline in self._waiting:
            deadline.reschedule(now)
        for task in self._waiting_tasks:
            task.cancel(CUT)
        for response in self._reading:
            response.content.set_exception(SidecarShutdown("the sidecar's drain timeout ran out"))
        return len(self._waiting) + len(self._waiting_tasks) + len(self._reading)

    def _was_cut(self) -> bool:
        """``cut_off``, read again after an await (``cut`` may have run meanwhile)."""
        return self.cut_off

    def _shutting_down(self) -> ShuttingDown:
        err = ShuttingDown(
            f"the sidecar is shutting down and its drain timeout "
            f"({self._settings.drain_timeout:g}s) ran out before the provider answered; retry"
        )
        err.headers["Retry-After"] = str(self._settings.limits.retry_after)
        return err

    def _prepare(
        self, release: Release, path: str, query: str
    ) -> tuple[URL, dict[str, str], tuple[str, ...]]:
        """The call's URL (parsed and checked against the host policy), the headers that carry
        nothing of the request, and the agent headers its provider kind forwards."""
        key = (id(release), path, query)
        prepared = self._prepared.get(key)
        if prepared is None or prepared[0] is not release:
            url = release.base_url + path + (f"?{query}" if query else "")
            try:
                self.policy.check_url(url)
            except HostRefused as exc:
                raise UpstreamHostRefused(
                    f"the provider of release {release.name!r} is not an allowed upstream: {exc}"
                ) from exc
            try:
                kind = provider(release.provider)
            except UnknownProvider as exc:  # the record validates it; a newer kind is refused
                raise ProviderKeyMissing(f"release {release.name!r}: {exc}") from exc
            if len(self._prepared) >= MAX_PREPARED:
                self._prepared.clear()
            headers = self._headers(release, kind)
            prepared = self._prepared[key] = (release, URL(url), headers, kind.forwarded)
        return prepared[1], prepared[2], prepared[3]

    def _headers(self, release: Release, kind: ProviderKind) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            # The body is relayed byte for byte: a compressed one would reach the agent
            # without its Content-Encoding, so ask the provider for none.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        key = ""
        if release.api_key_env:
            key = self._environ.get(release.api_key_env, "")
            if not key:
                raise ProviderKeyMissing(
                    f"release {release.name!r} takes its provider key from the environment "
                    f"variable {release.api_key_env}, which is not set in this sidecar"
                )
            if not _KEY_CHARS.issuperset(key):
                raise ProviderKeyMissing(
                    f"release {release.name!r} takes its provider key from the environment "
                    f"variable {release.api_key_env}, which holds whitespace or control "
                    "characters (a trailing newline from a secret file?); fix the sidecar's "
                    "environment"
                )
        headers.update(kind.headers(key, release.api_version, {}))
        return headers

    @asynccontextmanager
    async def post(
        self,
        release: Release,
        path: str,
        body: bytes | None,
        *,
        stream: bool,
        request_id: str,
        method: str = "POST",
        agent_headers: Mapping[str, str] | None = None,
        query: str = "",
        extra_headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST (or ``method``) to the release's provider; yields the response once its headers
        arrived.

        ``agent_headers``: the agent's request headers, of which the provider kind forwards
        the few it names; ``query``: the agent's query string, passed on as sent;
        ``extra_headers``: added to the call (the trace context), never over the client's own."""
        assert self._session is not None, "Upstream.start() was not awaited"
        s = self._settings
        url, base, forwarded = self._prepare(release, path, query)
        headers = {
            **(extra_headers or {}),
            **base,
            "Accept": "text/event-stream" if stream else "application/json",
            "X-Request-Id": request_id,
        }
        if forwarded and agent_headers:
            for name in forwarded:  # the agent's version wins over the release's default
                if value := agent_headers.get(name):
                    headers[name] = value
        if stream:
            timeout, head_deadline = self._stream_timeout, s.first_byte_timeout
        else:
            timeout, head_deadline = self._answer_timeout, s.request_timeout
        if self.cut_off:
            raise self._shutting_down()
        # sock_read bounds the gaps between a stream's chunks; the answer's head has its own
        # deadline. A whole answer is bounded by ClientTimeout's total alone: ``cut`` cancels
        # its task instead (an asyncio.timeout per request costs more than the call's headers).
        deadline = asyncio.timeout(head_deadline) if stream else None
        task = None if stream else asyncio.current_task()
        if deadline is not None:
            self._waiting.add(deadline)
        if task is not None:
            self._waiting_tasks.add(task)
        try:
            call = self._session.request(
                method, url, data=None if body is None else BytesPayload(body), headers=headers,
                timeout=timeout,
                allow_redirects=False,
            )  # fmt: skip
            if deadline is None:
                response = await call
            else:
                async with deadline:
                    response = await call
        except asyncio.CancelledError:
            if task is not None and self._was_cut() and task.cancelling():
                task.uncancel()
                raise self._shutting_down() from None
            raise
        except TimeoutError as exc:
            if self.cut_off:
                raise self._shutting_down() from exc
            raise UpstreamTimeout(
                f"provider of release {release.name!r} sent no response within {head_deadline:g}s"
            ) from exc
        except CONNECT_ERRORS as exc:
            if (reason := refused_reason(exc)) is not None:
                raise UpstreamHostRefused(
                    f"the provider of release {release.name!r} is not an allowed upstream: {reason}"
                ) from exc
            raise UpstreamUnreachable(
                f"cannot reach the provider of release {release.name!r}: {type(exc).__name__}"
            ) from exc
        except aiohttp.ClientError as exc:
            # Not HTTP (a bad status line, conflicting framing): its text may quote whatever
            # the provider sent back, request headers included, so only the type is reported.
            raise UpstreamUnreachable(
                f"the provider of release {release.name!r} answered with malformed HTTP: "
                f"{type(exc).__name__}"
            ) from exc
        finally:
            if deadline is not None:
                self._waiting.discard(deadline)
            if task is not None:
                self._waiting_tasks.discard(task)
        if 300 <= response.status < 400:
            response.close()
            raise UpstreamUnreachable(
                f"the provider of release {release.name!r} answered with a redirect (HTTP "
                f"{response.status}); redirects are never followed"
            )
        self._reading.add(response)
        try:
            yield response
        finally:
            self._reading.discard(response)
            # An unfinished body (client went away, stream cut) must close the provider
            # connection, so the provider stops generating for nobody.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def read_body(self, release: Release, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except SidecarShutdown as exc:
            raise self._shutting_down() from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"provider of release {release.name!r} did not finish its response in time"
            ) from exc
        except CONNECT_ERRORS as exc:
            raise UpstreamUnreachable(
                f"provider of release {release.name!r} broke the connection: {type(exc).__name__}"
            ) from exc
