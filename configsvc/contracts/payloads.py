"""Request bodies and queries of the contract API: strict parsing, no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from configsvc.errors import InvalidRequest
from configsvc.http import checked, parse_object, text
from holdfast.contracts import semver
from holdfast.contracts.schema import SchemaProblem, check_schema
from holdfast.keyspace.contract import (
    DEFAULT_POLICY,
    DEFAULT_TIMEOUT_S,
    MAX_TIMEOUT_S,
    POLICIES,
)
from holdfast.keyspace.records import validate_base_url


def version(value: str, *, param: str) -> str:
    try:
        semver.parse(value)
    except semver.VersionError as exc:
        raise InvalidRequest(str(exc), param=param) from exc
    return value


def _schema(obj: Mapping[str, Any], name: str, *, object_args: bool) -> dict[str, Any]:
    if name not in obj:
        raise InvalidRequest(f"field {name!r} is required (a JSON Schema object)", param=name)
    try:
        return check_schema(obj[name], what=name, object_args=object_args)
    except SchemaProblem as exc:
        raise InvalidRequest(str(exc), param=name) from exc


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterContract:
    args_schema: dict[str, Any]
    result_schema: dict[str, Any]
    backend: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    idempotent: bool = False
    policy: str = DEFAULT_POLICY
    description: str = ""
    reason: str = ""

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"args_schema", "result_schema", "backend", "timeout_s", "idempotent", "policy"}
        | {"description", "reason"}
    )

    @classmethod
    def parse(cls, raw: bytes) -> RegisterContract:
        obj = parse_object(raw, cls.FIELDS)
        backend = text(obj, "backend")
        timeout = obj.get("timeout_s", DEFAULT_TIMEOUT_S)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT_S
        ):
            raise InvalidRequest(
                f"field 'timeout_s' must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]",
                param="timeout_s",
            )
        idempotent = obj.get("idempotent", False)
        if not isinstance(idempotent, bool):
            raise InvalidRequest("field 'idempotent' must be true or false", param="idempotent")
        policy = text(obj, "policy") or DEFAULT_POLICY
        if policy not in POLICIES:
            raise InvalidRequest(
                f"field 'policy' must be one of {', '.join(POLICIES)}", param="policy"
            )
        return cls(
            args_schema=_schema(obj, "args_schema", object_args=True),
            result_schema=_schema(obj, "result_schema", object_args=False),
            backend=checked("backend", validate_base_url, backend) if backend else "",
            timeout_s=float(timeout),
            idempotent=idempotent,
            policy=policy,
            description=text(obj, "description"),
            reason=text(obj, "reason"),
        )


@dataclass(frozen=True, slots=True)
class DiffQuery:
    old: str
    new: str

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> DiffQuery:
        unknown = sorted(set(query) - {"from", "to"})
        if unknown:
            raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}")
        for needed in ("from", "to"):
            if not query.get(needed):
                raise InvalidRequest(f"query parameter {needed!r} is required", param=needed)
        return cls(version(query["from"], param="from"), version(query["to"], param="to"))
