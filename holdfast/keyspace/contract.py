"""A tool contract version: ``contracts/<tool>/<version>``, immutable once registered."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self, cast

from holdfast.contracts import semver
from holdfast.contracts.schema import SchemaProblem, check_schema, content_hash
from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import MAX_TEXT
from holdfast.keyspace.keys import NAME_RE
from holdfast.keyspace.records import validate_base_url

Policy = Literal["enforce", "rewrite", "report"]
POLICIES: Final[tuple[Policy, ...]] = ("enforce", "rewrite", "report")
DEFAULT_POLICY: Final[Policy] = "enforce"
COMPAT_CLASSES: Final = ("initial", "breaking", "compatible", "cosmetic")
DEFAULT_TIMEOUT_S: Final = 10.0
MAX_TIMEOUT_S: Final = 300.0


def validate_policy(value: str, *, optional: bool = False) -> str:
    if (optional and not value) or value in POLICIES:
        return value
    raise RecordError(f"invalid contract policy {value!r:.40}; use one of {', '.join(POLICIES)}")


def validate_timeout(value: float) -> float:
    """The timeout as a float: ``2`` and ``2.0`` are one timeout, and the content hash (which
    canonical JSON would give ``2`` and ``2.0`` apart) must not tell them apart either."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_TIMEOUT_S
    ):
        raise RecordError(f"tool timeout must be in (0, {MAX_TIMEOUT_S:g}] seconds, got {value!r}")
    return float(value)


def contract_content(
    *,
    args_schema: dict[str, Any],
    result_schema: dict[str, Any],
    backend: str,
    timeout_s: float,
    idempotent: bool,
    policy: str,
) -> dict[str, Any]:
    """What a version's content hash covers (and what two versions are compared on)."""
    return {
        "args_schema": args_schema,
        "result_schema": result_schema,
        "backend": backend,
        "timeout_s": validate_timeout(timeout_s),
        "idempotent": idempotent,
        "policy": policy,
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Contract:
    """Schemas of one tool's arguments and result, and how the sidecar calls its backend.

    ``backend`` is empty for tools the agent executes itself (only the model's tool calls are
    then checked). ``compat`` classifies this version against ``previous``.
    """

    KIND: ClassVar[str] = "contract"
    tool: str
    version: str
    args_schema: dict[str, Any]
    result_schema: dict[str, Any]
    backend: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    idempotent: bool = False
    policy: str = DEFAULT_POLICY
    compat: str = "initial"
    previous: str = ""
    content_hash: str = ""
    created_at: float = 0.0
    created_by: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_RE.fullmatch(self.tool):
            raise RecordError(f"invalid tool name {self.tool!r:.70}")
        for what, version in (("version", self.version), ("previous", self.previous)):
            if (version or what == "version") and not semver.is_version(version):
                raise RecordError(f"invalid contract {what} {version!r:.40}: use MAJOR.MINOR.PATCH")
        try:
            check_schema(self.args_schema, what="args schema", object_args=True)
            check_schema(self.result_schema, what="result schema")
        except SchemaProblem as exc:
            raise RecordError(str(exc)) from exc
        if self.backend:
            object.__setattr__(self, "backend", validate_base_url(self.backend))
        # Normalised before the hash: a record decodes its numbers as floats (msgpack keeps
        # what was encoded, the readers give floats), so an int here would hash differently
        # from the same record read back and fail its own check on the sidecar.
        object.__setattr__(self, "timeout_s", validate_timeout(self.timeout_s))
        object.__setattr__(self, "created_at", float(self.created_at))
        validate_policy(self.policy)
        if self.compat not in COMPAT_CLASSES:
            raise RecordError(f"invalid compat class {self.compat!r:.40}")
        if len(self.description) > MAX_TEXT or len(self.created_by) > MAX_TEXT:
            raise RecordError(f"description and created_by are limited to {MAX_TEXT} characters")
        expected = content_hash(self.content())
        if self.content_hash and self.content_hash != expected:
            raise RecordError(f"contract {self.tool}/{self.version} content hash does not match")
        object.__setattr__(self, "content_hash", expected)

    @property
    def ref(self) -> str:
        return f"{self.tool}@{self.version}"

    def content(self) -> dict[str, Any]:
        return contract_content(
            args_schema=self.args_schema,
            result_schema=self.result_schema,
            backend=self.backend,
            timeout_s=self.timeout_s,
            idempotent=self.idempotent,
            policy=self.policy,
        )

    def public(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "version": self.version,
            **self.content(),
            "compat": self.compat,
            "previous": self.previous,
            "content_hash": self.content_hash,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "description": self.description,
        }

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        args, result = fields.submap(f, "args_schema"), fields.submap(f, "result_schema")
        if args is None or result is None:
            raise RecordError("contract record needs args_schema and result_schema maps")
        timeout = fields.optional_number(f, "timeout_s", DEFAULT_TIMEOUT_S)
        return cls(
            tool=fields.name(f, "tool"),
            version=fields.text(f, "version"),
            args_schema=args,
            result_schema=result,
            backend=fields.text(f, "backend", optional=True),
            timeout_s=timeout,
            idempotent=fields.flag(f, "idempotent"),
            policy=fields.text(f, "policy", optional=True) or DEFAULT_POLICY,
            compat=fields.text(f, "compat", optional=True) or "initial",
            previous=fields.text(f, "previous", optional=True),
            content_hash=fields.text(f, "content_hash", optional=True),
            created_at=fields.optional_number(f, "created_at", 0.0),
            created_by=fields.text(f, "created_by", optional=True),
            description=fields.text(f, "description", optional=True),
        )


def decode_contract(parts: tuple[str, ...], value: bytes) -> Contract:
    """The sidecar's decoder for ``contracts/<tool>/<version>``: the record must match its key."""
    contract = Contract.decode(value)
    if (contract.tool, contract.version) != parts:
        raise RecordError(f"contract record names {contract.ref}, its key {'/'.join(parts)}")
    return contract


def effective_policy(release_policy: str, contract: Contract) -> Policy:
    """A release's policy, when it sets one, overrides the contract's own."""
    return cast(Policy, release_policy or contract.policy)
