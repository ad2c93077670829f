"""Compiled contracts: one pair of validators per contract version, built once and cached.

Contract versions are immutable, so a validator compiled for ``tool/version`` with a given
content hash stays right for as long as the record exists; the cache is keyed by all three
and bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from holdfast.contracts.schema import CompiledSchema, canonical, compile_validator
from holdfast.keyspace.contract import Contract, Policy, effective_policy
from holdfast.keyspace.records import Release
from holdfast.logs import get_logger
from sidecar.config import ConfigSnapshot

log = get_logger(__name__)

MAX_COMPILED: Final = 4096


@dataclass(frozen=True, slots=True)
class Compiled:
    contract: Contract
    args: CompiledSchema
    result: CompiledSchema
    args_canonical: bytes

    def args_errors(self, instance: Any) -> list[str]:
        return self.args.errors(instance)

    def result_errors(self, instance: Any) -> list[str]:
        return self.result.errors(instance)


@dataclass(frozen=True, slots=True)
class Pinned:
    """A tool the release pins, with its compiled contract (None: record not in this sidecar)."""

    tool: str
    version: str
    compiled: Compiled | None
    policy: Policy

    @property
    def ref(self) -> str:
        return f"{self.tool}@{self.version}"


class ContractBook:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str], Compiled] = {}
        self.uncompilable: dict[tuple[str, str, str], str] = {}  # key -> why

    def compiled(self, snapshot: ConfigSnapshot | None, tool: str, version: str) -> Compiled | None:
        if snapshot is None:
            return None
        contract = snapshot.of_kind("contracts").get(f"{tool}/{version}")
        if not isinstance(contract, Contract):
            return None
        key = (tool, version, contract.content_hash)
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) >= MAX_COMPILED:
                self._cache.clear()
            try:
                args = compile_validator(contract.args_schema)
                result = compile_validator(contract.result_schema)
            except ValueError as exc:
                # Admitted by an older configsvc but not compilable here (e.g. a pattern that is
                # not ECMA-262): treated as not held, so the data path stays up and it is counted.
                if key not in self.uncompilable:
                    self.uncompilable[key] = str(exc).splitlines()[0][:200] if str(exc) else ""
                    log.warning("contract_uncompilable", tool=tool, version=version)
                return None
            found = self._cache[key] = Compiled(
                contract, args, result, canonical(contract.args_schema)
            )
        return found

    def pinned(self, snapshot: ConfigSnapshot | None, release: Release) -> dict[str, Pinned]:
        """Every tool the release pins; an unknown contract falls back to the release policy."""
        pins: dict[str, Pinned] = {}
        for tool, version in release.contracts.items():
            compiled = self.compiled(snapshot, tool, version)
            policy: Policy = (
                effective_policy(release.contract_policy, compiled.contract)
                if compiled is not None
                else "report"
            )
            pins[tool] = Pinned(tool, version, compiled, policy)
        return pins
