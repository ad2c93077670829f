"""Flag operations over the store: apply a flagd file in one transaction, get, list, history,
enable and kill. No HTTP here.

An apply validates the whole file first (holdfast.flags.definition); then every changed flag is
written with a compare-and-swap against the revision read, together with ONE audit entry, in
ONE etcd transaction: all of the file's changes land, or none do.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any, Final

from configsvc import errors
from configsvc.releases import ConfigService, store_read
from holdfast.flags.definition import FlagFileError, State, parse_file
from holdfast.keyspace import AuditEntry, RecordError
from holdfast.keyspace.flag import FlagRecord
from holdfast.keyspace.keys import KeyError_
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, Put

log = get_logger(__name__)

MAX_CAS_ATTEMPTS: Final = 5
HISTORY_PAGE: Final = 5000
HISTORY_GROWTH: Final = 4
MAX_HISTORY_SCAN: Final = 80_000  # newest audit entries decoded, at most, for one flag's history


@dataclass(frozen=True, slots=True)
class VersionedFlag:
    record: FlagRecord
    mod_revision: int

    def to_json(self) -> dict[str, Any]:
        return {**self.record.public(), "mod_revision": self.mod_revision}


@dataclass(frozen=True, slots=True)
class FlagHistory:
    revision: int
    entries: list[dict[str, Any]]
    complete: bool  # False: the newest MAX_HISTORY_SCAN audit entries held fewer than asked


@dataclass(frozen=True, slots=True)
class Applied:
    revision: int  # 0: nothing changed, nothing written
    changed: list[str]
    unchanged: list[str]


class FlagOps:
    def __init__(self, service: ConfigService) -> None:
        self.service = service
        self.store = service.store
        self.keyspace = service.keyspace

    def _key(self, flag: str) -> str:
        try:
            return self.keyspace.flag(flag)
        except KeyError_ as exc:
            raise errors.InvalidRequest(str(exc), param="key") from exc

    def _decode(self, kv: KeyValue) -> FlagRecord:
        try:
            return FlagRecord.decode(kv.value)
        except RecordError as exc:
            raise errors.StoredRecordInvalid(f"stored flag {kv.key} is unreadable: {exc}") from exc

    async def get(self, flag: str) -> VersionedFlag:
        kv = await store_read(self.store.get(self._key(flag)))
        if kv is None:
            raise errors.FlagNotFound(f"flag {flag!r:.130} is not defined", param="key")
        return VersionedFlag(self._decode(kv), kv.mod_revision)

    async def list_flags(self) -> tuple[int, list[VersionedFlag]]:
        revision, kvs = await store_read(self.store.list_prefix(self.keyspace.kind_prefix("flags")))
        return revision, [VersionedFlag(self._decode(kv), kv.mod_revision) for kv in kvs]

    async def apply(
        self, document: Any, *, source: str, raw: bytes, actor: str, reason: str
    ) -> Applied:
        try:
            specs, _ = parse_file(document)
        except FlagFileError as exc:
            raise errors.InvalidFlagFile(f"flag file refused, nothing written: {exc}") from exc
        digest = hashlib.sha256(raw).hexdigest()
        now = self.service.clock()
        for _attempt in range(MAX_CAS_ATTEMPTS):
            puts: list[Put] = []
            changed: list[str] = []
            unchanged: list[str] = []
            before: dict[str, Any] = {}
            after: dict[str, Any] = {}
            for spec in specs:
                key = self._key(spec.key)
                kv = await store_read(self.store.get(key))
                current = self._decode(kv) if kv is not None else None
                new = FlagRecord(
                    spec=spec, source=source, source_hash=digest, applied_by=actor, applied_at=now
                )
                if current is not None and current.same_definition(new):
                    unchanged.append(spec.key)
                    continue
                try:
                    value = new.encode()
                except RecordError as exc:
                    raise errors.InvalidFlagFile(f"flag {spec.key!r}: {exc}") from exc
                puts.append(Put(key, value, expected_mod_revision=kv.mod_revision if kv else 0))
                changed.append(spec.key)
                before[spec.key] = current.spec.to_flagd() if current else None
                after[spec.key] = spec.to_flagd()
            if not puts:
                return Applied(0, [], unchanged)
            extra = {"flags": changed, "source": source, "source_hash": digest}
            entry = self.service.audit_entry(
                actor, "flag.apply", "flags", reason, before, after, extra=extra
            )
            try:
                revision = await self._write(puts, entry)
            except CasConflict:
                log.info("flag_apply_cas_retry", attempt=_attempt + 1)
                continue
            log.info("flags_applied", changed=len(changed), revision=revision, actor=actor)
            return Applied(revision, changed, unchanged)
        raise errors.RevisionConflict("flags kept changing concurrently; nothing was written")

    async def set_state(self, flag: str, state: State, actor: str, reason: str) -> VersionedFlag:
        action = "flag.enable" if state == "ENABLED" else "flag.kill"
        for _attempt in range(MAX_CAS_ATTEMPTS):
            current = await self.get(flag)
            if current.record.spec.state == state:
                return current
            spec = dataclasses.replace(current.record.spec, state=state)
            record = dataclasses.replace(
                current.record, spec=spec, applied_by=actor, applied_at=self.service.clock()
            )
            entry = self.service.audit_entry(
                actor,
                action,
                f"flags/{flag}",
                reason,
                {"state": current.record.spec.state},
                {"state": state},
                extra={"flags": [flag]},
            )
            put = Put(self._key(flag), record.encode(), expected_mod_revision=current.mod_revision)
            try:
                revision = await self._write([put], entry)
            except CasConflict:
                continue
            log.info("flag_state_changed", flag=flag, state=state, revision=revision, actor=actor)
            return VersionedFlag(record, revision)
        raise errors.RevisionConflict(f"flag {flag!r} kept changing concurrently; try again")

    async def history(
        self, flag: str, limit: int, *, page: int = HISTORY_PAGE, most: int = MAX_HISTORY_SCAN
    ) -> FlagHistory:
        """The newest ``limit`` audit entries about ``flag``, newest first.

        The audit trail is shared by every kind of change, so it is read back in growing pages
        until ``limit`` entries of this flag are found or the trail is exhausted; past
        ``most`` entries the answer says it is not complete.
        """
        self._key(flag)
        scan = min(page, most)
        while True:
            revision, items = await self.service.audit.history(limit=scan)
            mine = [
                i.to_json()
                for i in items
                if i.entry.action.startswith("flag.") and flag in (i.entry.extra.get("flags") or [])
            ]
            exhausted = len(items) < scan
            if len(mine) >= limit or exhausted or scan >= most:
                break
            scan = min(scan * HISTORY_GROWTH, most)
        for item in mine:  # only this flag's part of a multi-flag apply
            for side in ("before", "after"):
                if isinstance(item[side], dict) and flag in item[side]:
                    item[side] = item[side][flag]
        return FlagHistory(revision, mine[:limit], complete=exhausted or len(mine) >= limit)

    async def _write(self, puts: list[Put], entry: AuditEntry) -> int:
        try:
            return await self.service.audit.write(puts, entry, check="`holdfastctl flag list`")
        except RecordError as exc:
            raise errors.InvalidFlagFile(f"the change is too large to audit: {exc}") from exc
