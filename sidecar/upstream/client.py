"""Talking to providers: one pooled HTTP client, credentials from the environment, typed errors.

Nothing from the agent's own headers is forwarded except content negotiation; the provider key
comes from the environment variable that the release names, so the agent's Authorization header
(and any key in etcd) never reaches a provider.

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

from holdfast import __version__
from holdfast.keyspace import Release
from holdfast.net.guard import HostRefused
from holdfast.net.resolver import guarded_connector, refused_reason
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
        # Calls in flight, so that ``cut`` can end them: the deadline of each call still waiting
        # for its answer, and each answer whose body is still being read.
        self._waiting: set[asyncio.Timeout] = set()
        self._reading: set[aiohttp.ClientResponse] = set()
        self.cut_off = False

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
        for response in self._reading:
            response.content.set_exception(SidecarShutdown("the sidecar's drain timeout ran out"))
        return len(self._waiting) + len(self._reading)

    def _shutting_down(self) -> ShuttingDown:
        err = ShuttingDown(
            f"the sidecar is shutting down and its drain timeout "
            f"({self._settings.drain_timeout:g}s) ran out before the provider answered; retry"
        )
        err.headers["Retry-After"] = str(self._settings.limits.retry_after)
        return err

    def _headers(
        self,
        release: Release,
        *,
        accept: str,
        request_id: str,
        extra: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        # ``extra`` first: what the client sets itself (the key above all) cannot be replaced.
        headers = {
            **(extra or {}),
            "Content-Type": "application/json",
            "Accept": accept,
            # The body is relayed byte for byte: a compressed one would reach the agent
            # without its Content-Encoding, so ask the provider for none.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
            "X-Request-Id": request_id,
        }
        if release.api_key_env:
            key = self._environ.get(release.api_key_env)
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
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @asynccontextmanager
    async def post(
        self,
        release: Release,
        path: str,
        body: bytes,
        *,
        stream: bool,
        request_id: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST to the release's provider; yields the response once its headers arrived.

        ``extra_headers``: added to the call (the trace context), never over the client's own."""
        assert self._session is not None, "Upstream.start() was not awaited"
        s = self._settings
        headers = self._headers(
            release,
            accept="text/event-stream" if stream else "application/json",
            request_id=request_id,
            extra=extra_headers,
        )
        if stream:
            timeout = aiohttp.ClientTimeout(
                sock_connect=s.connect_timeout, sock_read=s.stream_idle_timeout
            )
            head_deadline = s.first_byte_timeout
        else:
            timeout = aiohttp.ClientTimeout(total=s.request_timeout, sock_connect=s.connect_timeout)
            head_deadline = s.request_timeout
        url = release.base_url + path
        try:
            self.policy.check_url(url)
        except HostRefused as exc:
            raise UpstreamHostRefused(
                f"the provider of release {release.name!r} is not an allowed upstream: {exc}"
            ) from exc
        if self.cut_off:
            raise self._shutting_down()
        # sock_read bounds the gaps between a stream's chunks; the answer's head has its own
        # deadline (none beyond ClientTimeout for a whole answer, but ``cut`` may set one).
        deadline = asyncio.timeout(head_deadline if stream else None)
        self._waiting.add(deadline)
        try:
            async with deadline:
                response = await self._session.post(
                    url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                )
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
            self._waiting.discard(deadline)
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
