"""One call to a tool backend: POST the arguments, read a bounded JSON answer, classify failures.

Never raises for the backend's sake: every way a call can go wrong comes back as an outcome
(``timeout``, ``unreachable``, ``backend_error``, ``backend_rejected``, ``too_large``,
``not_json``) with a sentence the model can read. Idempotent tools get one retry on the
failures a retry can cure; non-idempotent tools are never retried.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from holdfast.json_limits import provider_json
from holdfast.logs import REQUEST_ID_HEADER
from holdfast.net.guard import HostPolicy, HostRefused
from holdfast.net.resolver import guarded_connector, refused_reason

DEFAULT_MAX_RESULT_BYTES: Final = 1 << 20
READ_CHUNK: Final = 64 * 1024
RETRYABLE: Final = frozenset({"timeout", "unreachable", "backend_error"})
RETRY_DELAY_S: Final = 0.05
# Outcomes that say nothing about the backend's health (no breaker opens nor closes on them,
# see sidecar.contract_breakers). A refused host or a redirect is a configuration problem.
NEUTRAL: Final = frozenset({"backend_rejected", "host_not_allowed", "redirect_refused"})


@dataclass(frozen=True, slots=True)
class BackendAnswer:
    outcome: str  # "ok" or an error class
    result: Any = None
    message: str = ""
    attempts: int = 1


class ToolBackend:
    def __init__(
        self, *, max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES, policy: HostPolicy | None = None
    ) -> None:
        self.max_result_bytes = max_result_bytes
        self.policy = policy if policy is not None else HostPolicy()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self.policy, limit=256, enable_cleanup_closed=True),
                auto_decompress=True,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(
        self,
        url: str,
        arguments: Any,
        *,
        timeout_s: float,
        idempotent: bool,
        request_id: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> BackendAnswer:
        """``extra_headers``: added to the call (the trace context), never over the client's."""
        attempts = 2 if idempotent else 1
        answer = BackendAnswer("unreachable", message="not called")
        for attempt in range(1, attempts + 1):
            answer = await self._once(url, arguments, timeout_s, request_id, extra_headers)
            if answer.outcome not in RETRYABLE or attempt == attempts:
                return BackendAnswer(answer.outcome, answer.result, answer.message, attempt)
            await asyncio.sleep(RETRY_DELAY_S)
        return answer

    async def _once(
        self,
        url: str,
        arguments: Any,
        timeout_s: float,
        request_id: str,
        extra_headers: Mapping[str, str] | None = None,
    ) -> BackendAnswer:
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            self.policy.check_url(url)
        except HostRefused as exc:
            return BackendAnswer("host_not_allowed", message=f"the tool backend {exc}")
        payload = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            **(extra_headers or {}),
            "Content-Type": "application/json",
            REQUEST_ID_HEADER: request_id,
        }
        try:
            async with asyncio.timeout(timeout_s):
                async with self._session.post(
                    url, data=payload, headers=headers, allow_redirects=False
                ) as resp:
                    raw = await self._read(resp)
                    status = resp.status
        except TimeoutError:
            return BackendAnswer("timeout", message=f"the tool backend took over {timeout_s:g}s")
        except _TooLarge:
            return BackendAnswer(
                "too_large",
                message=f"the tool backend's answer is larger than {self.max_result_bytes} bytes",
            )
        except (aiohttp.ClientError, OSError) as exc:
            if (reason := refused_reason(exc)) is not None:
                return BackendAnswer("host_not_allowed", message=f"the tool backend {reason}")
            return BackendAnswer(
                "unreachable", message=f"the tool backend is unreachable ({type(exc).__name__})"
            )
        if 300 <= status < 400:
            return BackendAnswer(
                "redirect_refused",
                message=f"the tool backend answered with a redirect (HTTP {status}); "
                "redirects are not followed",
            )
        if status >= 500:
            return BackendAnswer(
                "backend_error", message=f"the tool backend failed (HTTP {status})"
            )
        if status >= 400:
            return BackendAnswer(
                "backend_rejected",
                message=f"the tool backend refused the call (HTTP {status}): "
                + raw[:300].decode("utf-8", "replace"),
            )
        result = provider_json(raw, "tool_backend")
        if result is None and raw.strip() != b"null":
            return BackendAnswer("not_json", message="the tool backend's answer is not JSON")
        return BackendAnswer("ok", result=result)

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self.max_result_bytes:
            raise _TooLarge
        parts: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(READ_CHUNK):
            size += len(chunk)
            if size > self.max_result_bytes:
                raise _TooLarge
            parts.append(chunk)
        return b"".join(parts)


class _TooLarge(Exception):
    """The answer outgrew the limit (raised inside the read, turned into an outcome)."""
