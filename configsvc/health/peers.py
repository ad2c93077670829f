"""Asking another replica for what it holds: the status of agents whose health beats go there.

The request carries the caller's own credentials (``Authorization``) and names, so the replica
asked applies the same roles to them as this one did; ``local=1`` asks it to answer from its
own data only (never to forward again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import aiohttp
import msgpack

from configsvc.health.figures import AgentHealth
from holdfast.keyspace import HealthSnapshot, RecordError
from holdfast.keyspace.member import Member
from holdfast.logs import REQUEST_ID_HEADER, get_logger

log = get_logger(__name__)

FORWARDED_HEADERS: Final = ("Authorization", "X-Holdfast-Actor", REQUEST_ID_HEADER)
TIMEOUT_S: Final = 5.0


class PeerError(Exception):
    """The replica did not answer, or not with a status."""


class Peers:
    def __init__(self, *, timeout: float = TIMEOUT_S) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def status(
        self, member: Member, agents: Sequence[str], headers: Mapping[str, str]
    ) -> dict[str, dict[str, Any]]:
        """Each agent's status body as ``member`` holds it; PeerError if it cannot say."""
        await self.start()
        assert self._session is not None
        params = [("local", "1"), *(("agent", a) for a in agents)]
        forward = {h: headers[h] for h in FORWARDED_HEADERS if h in headers}
        try:
            async with self._session.get(
                f"{member.url}/v1/status", params=params, headers=forward
            ) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise PeerError(f"replica {member.replica} at {member.url}: {exc!r}") from exc
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("agents"), list):
            message = body.get("error") if isinstance(body, dict) else body
            raise PeerError(f"replica {member.replica} answered {status}: {message!r:.200}")
        found: dict[str, dict[str, Any]] = {}
        for entry in body["agents"]:
            if isinstance(entry, dict) and isinstance(entry.get("agent"), str):
                found[entry["agent"]] = entry
        return found

    async def health(
        self, member: Member, agents: Sequence[str], headers: Mapping[str, str]
    ) -> dict[str, AgentHealth]:
        """Each agent's health (figures and live sidecars) as ``member`` holds it
        (``GET /v1/health/agents``); PeerError if it cannot say."""
        await self.start()
        assert self._session is not None
        forward = {h: headers[h] for h in FORWARDED_HEADERS if h in headers}
        try:
            async with self._session.get(
                f"{member.url}/v1/health/agents",
                params=[("agent", a) for a in agents],
                headers=forward,
            ) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise PeerError(f"replica {member.replica} at {member.url}: {exc!r}") from exc
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("agents"), list):
            message = body.get("error") if isinstance(body, dict) else body
            raise PeerError(f"replica {member.replica} answered {status}: {message!r:.200}")
        found: dict[str, AgentHealth] = {}
        try:
            for entry in body["agents"]:
                found[str(entry["agent"])] = AgentHealth.from_json(entry)
        except (ValueError, TypeError, KeyError) as exc:
            raise PeerError(f"replica {member.replica} sent no health: {exc!r:.200}") from exc
        return found

    async def snapshots(
        self, member: Member, agent: str, headers: Mapping[str, str]
    ) -> list[HealthSnapshot]:
        """The newest health snapshot of each live sidecar of ``agent`` that ``member`` holds."""
        await self.start()
        assert self._session is not None
        forward = {h: headers[h] for h in FORWARDED_HEADERS if h in headers}
        try:
            async with self._session.get(
                f"{member.url}/v1/health/snapshots", params={"agent": agent}, headers=forward
            ) as resp:
                data = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise PeerError(f"replica {member.replica} at {member.url}: {exc!r}") from exc
        if status != 200:
            raise PeerError(f"replica {member.replica} answered {status}: {data[:200]!r}")
        try:
            raw = msgpack.unpackb(data, raw=False)
            if not isinstance(raw, list) or not all(isinstance(r, bytes) for r in raw):
                raise ValueError("not a list of records")
            return [HealthSnapshot.decode(r) for r in raw]
        except (ValueError, RecordError, msgpack.UnpackException) as exc:
            raise PeerError(f"replica {member.replica} sent no snapshots: {exc}") from exc
