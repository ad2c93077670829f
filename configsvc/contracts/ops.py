"""Tool contracts in configsvc: register (classify, assign the version), list, show, diff.

Registration is a read of the tool's versions, a classification against the newest, and a
create-only put (expected revision 0) of the next version with its audit entry in one etcd
transaction; two operators registering at once cannot both take a version number -- the loser
re-reads and classifies against the winner's version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from configsvc import errors
from configsvc.contracts.payloads import RegisterContract
from configsvc.releases import MAX_CAS_ATTEMPTS, ConfigService, store_read
from holdfast.contracts import semver
from holdfast.contracts.diff import ContractDiff, diff
from holdfast.contracts.schema import content_hash
from holdfast.keyspace import RecordError
from holdfast.keyspace.contract import Contract, contract_content
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, Put

log = get_logger(__name__)

SUMMARY_FIELDS: Final = (
    "tool", "version", "compat", "previous", "backend", "timeout_s", "idempotent", "policy",
    "content_hash", "created_at", "created_by", "description",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Registered:
    contract: Contract
    mod_revision: int
    created: bool
    diff: ContractDiff


def summary(contract: Contract) -> dict[str, Any]:
    public = contract.public()
    return {k: public[k] for k in SUMMARY_FIELDS}


class ContractOps:
    def __init__(self, service: ConfigService) -> None:
        self.service = service
        self.keyspace = service.keyspace

    def _tool_prefix(self, tool: str) -> str:
        return self.keyspace.contract(tool, "0.0.0").rpartition("/")[0] + "/"

    async def versions(self, tool: str) -> tuple[int, dict[str, tuple[Contract, int]]]:
        prefix = self._tool_prefix(tool)
        revision, kvs = await store_read(self.service.store.list_prefix(prefix))
        decoded = [(_decode(kv), kv.mod_revision) for kv in kvs]
        return revision, {contract.version: (contract, rev) for contract, rev in decoded}

    async def list_tools(self) -> tuple[int, list[dict[str, Any]]]:
        prefix = self.keyspace.kind_prefix("contracts")
        revision, kvs = await store_read(self.service.store.list_prefix(prefix))
        by_tool: dict[str, list[Contract]] = {}
        for kv in kvs:
            contract = _decode(kv)
            by_tool.setdefault(contract.tool, []).append(contract)
        tools = []
        for _name, found in sorted(by_tool.items()):
            newest = max(found, key=lambda c: semver.parse(c.version))
            tools.append({**summary(newest), "latest": newest.version, "versions": len(found)})
        return revision, tools

    async def list_versions(self, tool: str) -> tuple[int, list[dict[str, Any]]]:
        revision, found = await self.versions(tool)
        if not found:
            raise errors.ContractNotFound(f"tool {tool!r} has no registered contract")
        ordered = semver.ordered(found)
        return revision, [{**summary(found[v][0]), "mod_revision": found[v][1]} for v in ordered]

    async def get(self, tool: str, version: str) -> tuple[Contract, int]:
        kv = await store_read(self.service.store.get(self.keyspace.contract(tool, version)))
        if kv is None:
            raise errors.ContractNotFound(f"tool {tool!r} has no contract version {version!r}")
        return _decode(kv), kv.mod_revision

    async def diff(self, tool: str, old: str, new: str) -> ContractDiff:
        (a, _), (b, _) = await self.get(tool, old), await self.get(tool, new)
        return diff(a.content(), b.content())

    async def register(self, tool: str, req: RegisterContract, actor: str) -> Registered:
        content = contract_content(
            args_schema=req.args_schema,
            result_schema=req.result_schema,
            backend=req.backend,
            timeout_s=req.timeout_s,
            idempotent=req.idempotent,
            policy=req.policy,
        )
        digest = content_hash(content)
        for attempt in range(MAX_CAS_ATTEMPTS):
            _rev, found = await self.versions(tool)
            newest = semver.latest(found)
            previous, previous_rev = found[newest] if newest else (None, 0)
            if previous is not None and previous.content_hash == digest:
                return Registered(previous, previous_rev, False, ContractDiff("identical", ()))
            verdict = diff(previous.content() if previous else None, content)
            if verdict.compat == "identical":  # same meaning, other bytes (e.g. key order)
                verdict = ContractDiff("cosmetic", verdict.changes)
            version = verdict.next_version(newest)
            assert version is not None
            try:
                contract = Contract(
                    tool=tool,
                    version=version,
                    **content,
                    compat=verdict.compat,
                    previous=newest or "",
                    created_at=self.service.clock(),
                    created_by=actor,
                    description=req.description,
                )
            except RecordError as exc:
                raise errors.InvalidRequest(str(exc)) from exc
            key = self.keyspace.contract(tool, version)
            entry = self.service.audit_entry(
                actor,
                "contract.register",
                key,
                req.reason,
                summary(previous) if previous else None,
                summary(contract),
                extra={"tool": tool, "changes": [c.to_json() for c in verdict.changes[:50]]},
            )
            try:
                revision = await self.service._write(
                    Put(key, contract.encode(), expected_mod_revision=0), entry
                )
            except CasConflict:
                log.info("contract_register_retry", tool=tool, version=version, attempt=attempt)
                continue
            log.info(
                "contract_registered",
                tool=tool,
                version=version,
                compat=verdict.compat,
                previous=newest,
                revision=revision,
                actor=actor,
            )
            return Registered(contract, revision, True, verdict)
        raise errors.RevisionConflict(
            f"contracts of {tool!r} kept changing concurrently; nothing was written, try again"
        )


def _decode(kv: KeyValue) -> Contract:
    try:
        return Contract.decode(kv.value)
    except RecordError as exc:
        raise errors.StoredRecordInvalid(f"stored record {kv.key} is unreadable: {exc}") from exc
