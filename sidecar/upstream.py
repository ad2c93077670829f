"""Talking to providers: one pooled HTTP client, credentials from the environment, typed errors.

Nothing from the agent's own headers is forwarded except content negotiation; the provider key
comes from the environment variable that the release names, so the agent's Authorization header
(and any key in etcd) never reaches a provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Final

import aiohttp

from holdfast import __version__
from holdfast.guarded_resolver import guarded_connector, refused_reason
from holdfast.keyspace import Release
from holdfast.netguard import HostRefused
from sidecar.errors import (
    ProviderKeyMissing,
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

    def _headers(self, release: Release, *, accept: str, request_id: str) -> dict[str, str]:
        headers = {
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
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @asynccontextmanager
    async def post(
        self, release: Release, path: str, body: bytes, *, stream: bool, request_id: str
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST to the release's provider; yields the response once its headers arrived."""
        assert self._session is not None, "Upstream.start() was not awaited"
        s = self._settings
        headers = self._headers(
            release,
            accept="text/event-stream" if stream else "application/json",
            request_id=request_id,
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
        try:
            if stream:
                # sock_read bounds the gaps between chunks; the headers get their own deadline.
                async with asyncio.timeout(head_deadline):
                    response = await self._session.post(
                        url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                    )
            else:
                response = await self._session.post(
                    url, data=body, headers=headers, timeout=timeout, allow_redirects=False
                )
        except TimeoutError as exc:
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
        if 300 <= response.status < 400:
            response.close()
            raise UpstreamUnreachable(
                f"the provider of release {release.name!r} answered with a redirect (HTTP "
                f"{response.status}); redirects are never followed"
            )
        try:
            yield response
        finally:
            # An unfinished body (client went away, stream cut) must close the provider
            # connection, so the provider stops generating for nobody.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def read_body(self, release: Release, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"provider of release {release.name!r} did not finish its response in time"
            ) from exc
        except CONNECT_ERRORS as exc:
            raise UpstreamUnreachable(
                f"provider of release {release.name!r} broke the connection: {type(exc).__name__}"
            ) from exc
