"""Where a sidecar's health beats go, and how: the agent's owner replicas of configsvc, over HTTP.

``Replicas`` follows the ``members/`` keys of the sidecar's watch (every live configsvc replica,
under its lease) and names the agent's owners (``holdfast.health_owners``): the replicas that
hold this agent's health. ``BeatSender`` posts one snapshot (the same msgpack record that used
to be the etcd value) to one replica with the sidecar's token (``$HOLDFAST_SIDECAR_TOKEN``).

A sidecar that has never seen a replica (configsvc not running yet, or a version that does not
register itself) publishes into etcd as before; one that has seen a replica sends beats only
over HTTP, and falls back to etcd only after ``FALLBACK_AFTER_S`` without any replica, so that a
short configsvc outage cannot turn a whole fleet's beats into etcd writes at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp

from holdfast.health_owners import owners
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.member import Member
from holdfast.logs import get_logger
from holdfast.store import Change, KeyValue
from sidecar.settings.model import ENV_SIDECAR_TOKEN

log = get_logger(__name__)

BEATS_PATH: Final = "/v1/health/beats"
CONTENT_TYPE: Final = "application/msgpack"
FALLBACK_AFTER_S: Final = 300.0

Outcome = Literal["delivered", "refused", "failed"]


class Replicas:
    """The live configsvc replicas, as the sidecar's watch of ``members/`` shows them."""

    def __init__(
        self, keyspace: Keyspace, agent: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._prefix = keyspace.kind_prefix("members")
        self._agent = agent
        self._clock = clock
        self._members: dict[str, Member] = {}
        self._owners: list[Member] = []
        self._last_seen: float | None = None  # when a replica was last known to be there
        self.rejected = 0

    def accepts(self, key: str) -> bool:
        return key.startswith(self._prefix)

    def apply_reset(self, kvs: Mapping[str, KeyValue]) -> None:
        self._members = {}
        for key, kv in kvs.items():
            if self.accepts(key):
                self._adopt(key, kv.value)
        self._changed()

    def apply_changes(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.kind == "delete":
                self._members.pop(change.key, None)
            else:
                self._adopt(change.key, change.value)
        self._changed()

    def _adopt(self, key: str, value: bytes) -> None:
        try:
            member = Member.decode(value)
        except RecordError as exc:
            self.rejected += 1
            log.warning("member_record_rejected", key=key, reason=str(exc))
            return
        if key != self._prefix + member.replica:
            self.rejected += 1
            log.warning("member_record_rejected", key=key, reason="names another replica")
            return
        self._members[key] = member

    def _changed(self) -> None:
        by_id = {m.replica: m for m in self._members.values()}
        self._owners = [by_id[r] for r in owners(self._agent, by_id)]
        if self._owners:
            self._last_seen = self._clock()

    def owners(self) -> list[Member]:
        """The agent's owner replicas now, first owner first (empty: none is registered)."""
        if self._owners:
            self._last_seen = self._clock()
        return list(self._owners)

    def use_etcd(self) -> bool:
        """True when beats should go into etcd: no replica now, and none for a long while."""
        if self._owners:
            return False
        return self._last_seen is None or self._clock() - self._last_seen >= FALLBACK_AFTER_S

    def __len__(self) -> int:
        return len(self._members)


@dataclass(slots=True)
class TargetState:
    delivered: int = 0
    failed: int = 0
    refused: int = 0
    failing: bool = False
    last_error: str = ""


class BeatSender:
    """POSTs snapshots to replicas; one keep-alive connection per replica."""

    def __init__(self, token: str, *, timeout: float) -> None:
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.targets: dict[str, TargetState] = {}

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit_per_host=2, ttl_dns_cache=60),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": CONTENT_TYPE}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def send(self, member: Member, body: bytes) -> Outcome:
        await self.start()
        assert self._session is not None
        state = self.targets.setdefault(member.replica, TargetState())
        try:
            async with self._session.post(
                member.url + BEATS_PATH, data=body, headers=self._headers()
            ) as resp:
                await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return self._failed(member, state, "failed", str(exc) or type(exc).__name__)
        if status < 300:
            state.delivered += 1
            if state.failing:
                state.failing = False
                log.info("health_beats_resumed", replica=member.replica)
            return "delivered"
        outcome: Outcome = "refused" if status in (401, 403) else "failed"
        return self._failed(member, state, outcome, f"HTTP {status}")

    def _failed(self, member: Member, state: TargetState, outcome: Outcome, error: str) -> Outcome:
        if outcome == "refused":
            state.refused += 1
        else:
            state.failed += 1
        state.last_error = error
        if not state.failing:  # once per streak, not once per beat
            state.failing = True
            event = "health_beat_refused" if outcome == "refused" else "health_beat_failed"
            hint = f"set ${ENV_SIDECAR_TOKEN} to a configsvc token of role sidecar"
            log.warning(
                event,
                replica=member.replica,
                url=member.url,
                error=error,
                **({"hint": hint} if outcome == "refused" else {}),
            )
        return outcome

    def status(self) -> dict[str, Any]:
        return {
            replica: {
                "delivered": s.delivered,
                "failed": s.failed,
                "refused": s.refused,
                "last_error": s.last_error or None,
            }
            for replica, s in sorted(self.targets.items())
        }
