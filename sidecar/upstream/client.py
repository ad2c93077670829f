"""Talking to providers: one pooled HTTP client, credentials from the environment, typed errors.

Nothing from the agent's own headers is forwarded but what the release's provider kind names
(holdfast.providers: Anthropic's ``anthropic-beta`` and ``anthropic-version``); the provider key
comes from the environment variable that the release names and goes where its kind wants it
(``Authorization: Bearer``, ``x-api-key``), so the agent's own key (and any key in etcd) never
reaches a provider. The agent's query string, when it sent one, goes along unchanged.

When the sidecar's drain timeout runs out, ``cut`` ends every provider call still in flight:
one waiting for its answer gets 503 ``overloaded`` (Retry-After), a stream being relayed breaks
with ``SidecarShutdown`` and the relay reports that in-band.

The HTTP client is ``sidecar.upstream.h1`` (asyncio protocols over llhttp): measured per call it
costs a fraction of aiohttp's client (``bench/upstream_client.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from holdfast import __version__
from holdfast.keyspace import Release
from holdfast.net.guard import HostRefused, refused_reason
from holdfast.providers import ProviderKind, UnknownProvider, provider
from sidecar.errors import (
    ProviderKeyMissing,
    ShuttingDown,
    UpstreamHostRefused,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from sidecar.settings import SidecarSettings
from sidecar.upstream.h1 import BadTarget, Client, H1Error, MalformedResponse, Target
from sidecar.upstream.surface import ProviderResponse

USER_AGENT: Final = f"holdfast-sidecar/{__version__}"
# Provider response headers an agent's SDK may act on (rate limits, retry hints).
RELAYED_RESPONSE_HEADERS: Final = ("retry-after", "openai-processing-ms", "x-request-id")
RELAYED_PREFIXES: Final = ("x-ratelimit-",)
# What a provider call or a body read raises when the provider (or the connection) fails;
# TimeoutError (a deadline) is a separate case, checked first where it matters.
CONNECT_ERRORS: Final = (H1Error, OSError)
# A provider key is one token of visible ASCII; anything else (a trailing newline from a secret
# file) could never be sent as a header and must not fail deep inside the HTTP client.
_KEY_CHARS: Final = frozenset(chr(c) for c in range(0x21, 0x7F))
# Calls prepared per (release, path): releases change a few times a day, requests many times a
# second. Bounded: a config with more releases than this only re-prepares.
MAX_PREPARED: Final = 256


class SidecarShutdown(H1Error):
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
        self._client: Client | None = None
        self.policy = settings.limits.host_policy()
        self.cut_off = False
        # What a call needs that depends only on its release and path: the URL, parsed and
        # checked against the host policy once; the headers that carry no request id.
        # Keyed by the release object (records are immutable; a changed release is a new one)
        # and held with it, so that an id reused after garbage collection never matches.
        self._prepared: dict[
            tuple[int, str, str], tuple[Release, Target, dict[str, str], tuple[str, ...]]
        ] = {}

    async def start(self) -> None:
        # DNS answers are checked against the policy on every (re)resolution: no rebinding.
        self._client = Client(self.policy, connect_timeout=self._settings.connect_timeout)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def cut(self) -> int:
        """End every provider call in flight and refuse new ones; returns how many were cut:
        a call waiting for its answer fails (``ShuttingDown``), a body being read breaks with
        ``SidecarShutdown``."""
        self.cut_off = True
        if self._client is None:
            return 0
        return self._client.cut(SidecarShutdown("the sidecar's drain timeout ran out"))

    def _shutting_down(self) -> ShuttingDown:
        err = ShuttingDown(
            f"the sidecar is shutting down and its drain timeout "
            f"({self._settings.drain_timeout:g}s) ran out before the provider answered; retry"
        )
        err.headers["Retry-After"] = str(self._settings.limits.retry_after)
        return err

    def _prepare(
        self, release: Release, path: str, query: str
    ) -> tuple[Target, dict[str, str], tuple[str, ...]]:
        """The call's URL (parsed and checked against the host policy), the headers that carry
        nothing of the request, and the agent headers its provider kind forwards."""
        key = (id(release), path, query)
        prepared = self._prepared.get(key)
        if prepared is None or prepared[0] is not release:
            url = release.base_url + path + (f"?{query}" if query else "")
            try:
                self.policy.check_url(url)
                target = Target.parse(url)
            except HostRefused as exc:
                raise UpstreamHostRefused(
                    f"the provider of release {release.name!r} is not an allowed upstream: {exc}"
                ) from exc
            except BadTarget as exc:
                raise UpstreamUnreachable(
                    f"the provider URL of release {release.name!r} cannot be called: {exc}"
                ) from exc
            try:
                kind = provider(release.provider)
            except UnknownProvider as exc:  # the record validates it; a newer kind is refused
                raise ProviderKeyMissing(f"release {release.name!r}: {exc}") from exc
            if len(self._prepared) >= MAX_PREPARED:
                self._prepared.clear()
            headers = self._headers(release, kind)
            prepared = self._prepared[key] = (release, target, headers, kind.forwarded)
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

    def post(
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
    ) -> ProviderCall:
        """POST (or ``method``) to the release's provider: ``async with upstream.post(...) as
        response`` yields the response once its headers arrived.

        ``agent_headers``: the agent's request headers, of which the provider kind forwards
        the few it names; ``query``: the agent's query string, passed on as sent;
        ``extra_headers``: added to the call (the trace context), never over the client's own."""
        assert self._client is not None, "Upstream.start() was not awaited"
        s = self._settings
        target, base, forwarded = self._prepare(release, path, query)
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
        # A stream's head has its own deadline, then each gap between chunks; a whole answer,
        # head and body, has the request timeout. The client keeps these without a timer per
        # call; ``cut`` ends the calls it holds.
        if stream:
            head_deadline, idle = s.first_byte_timeout, s.stream_idle_timeout
        else:
            head_deadline, idle = s.request_timeout, 0.0
        if self.cut_off:
            raise self._shutting_down()
        return ProviderCall(
            self, release, target, method, headers, b"" if body is None else body,
            head_deadline, idle,
        )  # fmt: skip

    async def _send(
        self,
        release: Release,
        target: Target,
        method: str,
        headers: Mapping[str, str],
        body: bytes,
        head_deadline: float,
        idle: float,
    ) -> ProviderResponse:
        assert self._client is not None, "Upstream.start() was not awaited"
        try:
            response = await self._client.request(
                target, method, headers, body, head_timeout=head_deadline, idle=idle
            )
        except SidecarShutdown as exc:
            raise self._shutting_down() from exc
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"provider of release {release.name!r} sent no response within {head_deadline:g}s"
            ) from exc
        except MalformedResponse as exc:
            # Not HTTP (a bad status line, conflicting framing, an oversized head): only the
            # type is reported, never what the provider sent (it may echo request headers).
            raise UpstreamUnreachable(
                f"the provider of release {release.name!r} answered with malformed HTTP: "
                f"{type(exc).__name__}"
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
        return response

    async def read_body(self, release: Release, response: ProviderResponse) -> bytes:
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


class ProviderCall:
    """What ``Upstream.post`` returns: ``async with`` sends the request and yields the response
    once its head arrived; leaving the block releases the connection when the body was read to
    its end and closes it otherwise (a client that went away, a cut stream: the provider stops
    generating for nobody). A class rather than ``asynccontextmanager``: the generator machinery
    cost more per call than the rest of the call's bookkeeping."""

    __slots__ = ("_args", "_response", "_upstream")

    def __init__(
        self,
        upstream: Upstream,
        release: Release,
        target: Target,
        method: str,
        headers: Mapping[str, str],
        body: bytes,
        head_deadline: float,
        idle: float,
    ) -> None:
        self._upstream = upstream
        self._args = (release, target, method, headers, body, head_deadline, idle)
        self._response: ProviderResponse | None = None

    async def __aenter__(self) -> ProviderResponse:
        self._response = response = await self._upstream._send(*self._args)
        return response

    async def __aexit__(self, *exc_info: object) -> None:
        response = self._response
        if response is None:
            return
        self._response = None
        if response.content.at_eof():
            response.release()
        else:
            response.close()
