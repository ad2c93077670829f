"""Warm-up probe of a release before a blue-green switch: one small generation through its
provider, exactly as a sidecar would send it (model, base URL, key variable of the release), in
its provider kind's API (holdfast.providers: a chat completion, or an Anthropic message).

The provider key is read from configsvc's own environment: keys never live in etcd. One HTTP
session is owned by the server process (``start``/``close``) so probes reuse connections.

Providers are reached only at hosts the upstream allowlist allows (``provider_session``: the
URL is checked first, every DNS answer at connect time) and redirects are never followed: a
3xx answer is a failed probe, so a release cannot bounce configsvc to a metadata address.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from configsvc.errors import ProbeFailed
from holdfast import dialects
from holdfast.json_limits import JsonRefused, loads_bounded
from holdfast.keyspace import Release
from holdfast.logs import get_logger
from holdfast.net.guard import HostPolicy, HostRefused
from holdfast.net.resolver import guarded_connector, refused_reason
from holdfast.providers import provider

log = get_logger(__name__)

PROBE_MAX_TOKENS: Final = 8
MAX_DETAIL: Final = 200
MAX_ANSWER_BYTES: Final = 1024 * 1024  # a probe answer has 8 tokens; more is not a completion


def provider_session(policy: HostPolicy, timeout: float, agent: str) -> aiohttp.ClientSession:
    """A session whose connections only reach hosts ``policy`` allows (DNS answers checked)."""
    return aiohttp.ClientSession(
        connector=guarded_connector(policy),
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers={"User-Agent": agent},
    )


def url_refusal(policy: HostPolicy, url: str) -> str:
    """Why ``policy`` refuses ``url`` (IP literals never reach the resolver), or ''."""
    try:
        policy.check_url(url)
    except HostRefused as exc:
        return str(exc)
    return ""


def scrub(text: str, secret: str) -> str:
    """``text`` with every copy of ``secret`` masked: a provider may echo the key it was sent
    in an error message or an answer, and what configsvc reports can reach logs and etcd."""
    return text.replace(secret, "[redacted]") if secret else text


def connect_problem(url: str, exc: aiohttp.ClientConnectorError) -> str:
    reason = refused_reason(exc)
    if reason is not None:
        return f"{url} refused by the upstream allowlist: {reason}"
    return f"cannot connect to {url}: {exc.os_error}"


class Prober:
    def __init__(
        self,
        *,
        timeout: float,
        prompt: str,
        environ: Mapping[str, str] = os.environ,
        policy: HostPolicy | None = None,
    ) -> None:
        self.timeout = timeout
        self.prompt = prompt
        self.environ = environ
        self.policy = policy if policy is not None else HostPolicy()
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._http is None:
            self._http = provider_session(self.policy, self.timeout, "holdfast-configsvc-probe")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def probe(self, release: Release) -> dict[str, Any]:
        """Raise ProbeFailed with the reason unless the provider answers a real completion."""
        if self._http is None:
            raise RuntimeError("Prober.start() was not called")
        kind = provider(release.provider)
        key = ""
        if release.api_key_env:
            key = self.environ.get(release.api_key_env, "")
            if not key:
                raise self._failed(
                    release,
                    f"${release.api_key_env} is not set in configsvc's environment, so the "
                    "provider cannot be called with the release's key",
                )
        headers = {"Content-Type": "application/json"}
        headers.update(kind.headers(key, release.api_version, {}))
        body = kind.one_turn(release.model, "", self.prompt, PROBE_MAX_TOKENS, temperature=None)
        url = release.base_url.rstrip("/") + kind.chat_path
        refusal = url_refusal(self.policy, url)
        if refusal:
            raise self._failed(release, f"{url} refused by the upstream allowlist: {refusal}")
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._http.post(
                url, json=body, headers=headers, allow_redirects=False
            ) as resp:
                raw = await read_capped(resp)
                status = resp.status
        except TimeoutError as exc:
            raise self._failed(release, f"no answer from {url} within {self.timeout:g}s") from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._failed(release, connect_problem(url, exc)) from exc
        except aiohttp.ClientError as exc:
            # the class only: aiohttp's text may quote the provider's bytes (an echoed key)
            raise self._failed(release, f"request to {url} failed: {type(exc).__name__}") from exc
        elapsed_ms = round((loop.time() - started) * 1000, 1)
        problem = scrub(answer_problem(status, raw, kind.chat_dialect), key)
        if problem:
            raise self._failed(release, problem)
        log.info("probe_succeeded", release=release.name, model=release.model, ms=elapsed_ms)
        return {"status": "ok", "model": release.model, "latency_ms": elapsed_ms}

    @staticmethod
    def _failed(release: Release, detail: str) -> ProbeFailed:
        log.info("probe_failed", release=release.name, model=release.model, detail=detail)
        return ProbeFailed(
            f"probe of release {release.name!r} (model {release.model}) failed: {detail}; "
            "nothing was switched (use --no-probe to switch anyway)",
            param="release",
        )


async def read_capped(resp: aiohttp.ClientResponse) -> bytes:
    """The head of a provider's answer: at most ``MAX_ANSWER_BYTES``, the rest never read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_ANSWER_BYTES:
            break
    return b"".join(chunks)[:MAX_ANSWER_BYTES]


def answer_problem(status: int, raw: bytes, dialect: str = "openai.chat") -> str:
    """Empty when the answer is a usable answer of ``dialect``; else what is wrong with it."""
    try:
        parsed: Any = loads_bounded(raw)
    except JsonRefused:  # not JSON, too deep, huge ints: never an exception out of here
        parsed = None
    if 300 <= status < 400:
        return f"provider answered HTTP {status} (a redirect; redirects are never followed)"
    if status != 200:
        message = _error_message(parsed) or raw.decode("utf-8", "replace").strip()
        return f"provider answered HTTP {status}: {_short(message) or 'no message'}"
    if not isinstance(parsed, dict):
        return "provider answered HTTP 200 with a body that is not a JSON object"
    if dialect == "openai.chat":
        choices = parsed.get("choices")
        if not isinstance(choices, list) or not choices:
            return "provider answered HTTP 200 without any choices"
    elif dialects.by_name(dialect).decode_body(raw) is None:
        return (
            f"provider answered HTTP 200 with a body that is not an answer of its API ({dialect})"
        )
    return ""


def _error_message(parsed: Any) -> str:
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return ""


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"
