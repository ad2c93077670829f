"""Compiled contracts: one pair of validators per contract version, built once and cached.

Contract versions are immutable, so a validator compiled for ``tool/version`` with a given
content hash stays right for as long as the record exists; the cache is keyed by all three
and bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from jsonschema.protocols import Validator

from holdfast.contracts.schema import canonical, compile_validator, first_errors
from holdfast.keyspace.contract import Contract, Policy, effective_policy
from holdfast.keyspace.records import Release
from sidecar.config import ConfigSnapshot

MAX_COMPILED: Final = 4096


@dataclass(frozen=True, slots=True)
class Compiled:
    contract: Contract
    args: Validator
    result: Validator
    args_canonical: bytes

    def args_errors(self, instance: Any) -> list[str]:
        return first_errors(self.args, instance)

    def result_errors(self, instance: Any) -> list[str]:
        return first_errors(self.result, instance)


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
        self.compiled_count = 0

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
            found = self._cache[key] = Compiled(
                contract,
                compile_validator(contract.args_schema),
                compile_validator(contract.result_schema),
                canonical(contract.args_schema),
            )
            self.compiled_count += 1
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
