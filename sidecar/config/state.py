"""The sidecar's view of its configuration: decoded, validated records swapped in atomically.

Pure state, no I/O: the etcd mirror (or the persisted snapshot at start-up) feeds it raw
key-values, and the request path reads ``current`` -- one attribute load, no lock, no await.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from holdfast.keyspace import Keyspace, RecordError, Release, Route
from holdfast.keyspace.keys import KeyError_
from holdfast.logs import get_logger
from holdfast.store import Change, KeyValue
from holdfast.store.types import kv_from_change

log = get_logger(__name__)

MAX_REJECTIONS_KEPT: Final = 20
Source = Literal["etcd", "snapshot"]
Record = object  # Release, Route, or a record of an environment-wide kind


@dataclass(frozen=True, slots=True)
class Rejection:
    key: str
    revision: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigSnapshot:
    """Everything one request needs to be routed, as of one etcd revision."""

    revision: int
    source: Source
    applied_at: float
    route: Route | None = None
    releases: Mapping[str, Release] = field(default_factory=dict)
    # Environment-wide kinds (flags, contracts, budgets...): kind -> {key after the kind: record}
    extra: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    raw: Mapping[str, KeyValue] = field(default_factory=dict)

    def of_kind(self, kind: str) -> Mapping[str, object]:
        return self.extra.get(kind, {})


# Decodes and validates one record of an environment-wide kind from its key's segments and its
# value; raises RecordError (the previous good value of the key then stays in force).
KindDecoder = Callable[[tuple[str, ...], bytes], object]


def wanted_key(keyspace: Keyspace, agent: str, kinds: Iterable[str] = ()) -> Callable[[str], bool]:
    """Keys this sidecar keeps: its own agent's releases and route, and every key of ``kinds``."""
    mine = (keyspace.releases_of(agent), *(keyspace.kind_prefix(k) for k in kinds))
    route = keyspace.route(agent)

    def accept(key: str) -> bool:
        return key == route or key.startswith(mine)

    return accept


class ConfigState:
    def __init__(
        self, keyspace: Keyspace, agent: str, *, kinds: Mapping[str, KindDecoder] | None = None
    ) -> None:
        self._keyspace = keyspace
        self._agent = agent
        self._kinds = dict(kinds or {})
        self._accept = wanted_key(keyspace, agent, self._kinds)
        self.current: ConfigSnapshot | None = None
        self._records: dict[str, Record] = {}  # decoded twin of current.raw
        self.rejections: list[Rejection] = []
        self._listeners: list[Callable[[ConfigSnapshot], None]] = []

    def on_change(self, listener: Callable[[ConfigSnapshot], None]) -> None:
        self._listeners.append(listener)

    def apply_reset(self, revision: int, kvs: Mapping[str, KeyValue], source: Source) -> None:
        """Replace the whole state; records that fail to decode keep their previous good value."""
        old_raw = self.current.raw if self.current is not None else {}
        raw: dict[str, KeyValue] = {}
        records: dict[str, Record] = {}
        for key, kv in kvs.items():
            if not self._accept(key):
                continue
            record = self._decode_or_reject(kv)
            if record is not None:
                raw[key], records[key] = kv, record
            elif key in old_raw:
                raw[key], records[key] = old_raw[key], self._records[key]
        self._publish(revision, raw, records, source)

    def apply_changes(self, revision: int, changes: Sequence[Change]) -> None:
        if self.current is None:
            return  # a delta without a base cannot be applied; the mirror always resets first
        raw = dict(self.current.raw)
        records = dict(self._records)
        touched = False
        for change in changes:
            if not self._accept(change.key):
                continue
            touched = True
            if change.kind == "delete":
                raw.pop(change.key, None)
                records.pop(change.key, None)
                continue
            kv = kv_from_change(change)
            record = self._decode_or_reject(kv)
            if record is not None:
                raw[change.key], records[change.key] = kv, record
        if touched:
            self._publish(revision, raw, records, "etcd")

    def _decode_or_reject(self, kv: KeyValue) -> Record | None:
        try:
            return self._decode(kv)
        except (RecordError, KeyError_) as exc:
            self._reject(kv, str(exc))
            return None

    def _decode(self, kv: KeyValue) -> Record:
        parsed = self._keyspace.parse(kv.key)
        if parsed.kind == "releases":
            release = Release.decode(kv.value)
            if (release.agent, release.name) != parsed.parts:
                raise RecordError(f"release record names {release.agent}/{release.name}")
            return release
        if parsed.kind == "routes":
            route = Route.decode(kv.value)
            if route.agent != parsed.parts[0]:
                raise RecordError(f"route record names agent {route.agent}")
            return route
        decoder = self._kinds.get(parsed.kind)
        if decoder is None:
            raise RecordError(f"unexpected kind {parsed.kind}")
        return decoder(parsed.parts, kv.value)

    def _reject(self, kv: KeyValue, reason: str) -> None:
        log.warning("config_record_rejected", key=kv.key, revision=kv.mod_revision, reason=reason)
        self.rejections.append(Rejection(kv.key, kv.mod_revision, reason))
        del self.rejections[:-MAX_REJECTIONS_KEPT]

    def _publish(
        self, revision: int, raw: dict[str, KeyValue], records: dict[str, Record], source: Source
    ) -> None:
        route: Route | None = None
        releases: dict[str, Release] = {}
        extra: dict[str, dict[str, object]] = {kind: {} for kind in self._kinds}
        for key, record in records.items():
            if isinstance(record, Route):
                route = record
            elif isinstance(record, Release):
                releases[record.name] = record
            else:
                parsed = self._keyspace.parse(key)
                extra[parsed.kind]["/".join(parsed.parts)] = record
        self._records = records
        snapshot = ConfigSnapshot(
            revision=revision,
            source=source,
            applied_at=time.time(),
            route=route,
            releases=releases,
            extra=extra,
            raw=raw,
        )
        self.current = snapshot
        log.info(
            "config_applied",
            revision=revision,
            source=source,
            stable=route.stable if route else None,
            releases=len(releases),
        )
        for listener in self._listeners:
            listener(snapshot)


def known_models(snapshot: ConfigSnapshot | None, agent: str) -> list[str]:
    aliases: Iterable[str] = snapshot.route.aliases if snapshot and snapshot.route else ()
    return [agent, *aliases]
