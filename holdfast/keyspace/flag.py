"""One feature flag at ``flags/<key>``: flagd's definition, self-contained, plus provenance.

``$ref``s are resolved when the file is applied, so each record evaluates on its own; the
decoder re-runs every check (value types, default variant, known operations), so a sidecar
refuses a damaged or hand-written record and keeps the previous one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from holdfast.flags.definition import FlagFileError, FlagSpec
from holdfast.flags.flagd_schema import STATES
from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagRecord:
    KIND: ClassVar[str] = "flag"
    spec: FlagSpec
    source: str = ""  # the file it was applied from (base name), "" when set by a command
    source_hash: str = ""  # sha256 of that file's bytes
    applied_by: str = ""
    applied_at: float = 0.0

    @property
    def key(self) -> str:
        return self.spec.key

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        variants = fields.submap(f, "variants")
        if not variants:
            raise RecordError("field 'variants' must be a non-empty map")
        state = fields.text(f, "state")
        if state not in STATES:
            raise RecordError(f"unknown flag state {state!r:.30}")
        default = f.get("default_variant")
        if default is not None and not isinstance(default, str):
            raise RecordError("field 'default_variant' must be a string or nil")
        metadata = fields.submap(f, "metadata") or {}
        if not all(isinstance(v, str | int | float | bool) for v in metadata.values()):
            raise RecordError("flag metadata values must be strings, numbers or booleans")
        try:
            spec = FlagSpec(
                key=fields.text(f, "key"),
                state=state,  # type: ignore[arg-type]  # checked against STATES above
                variants=variants,
                default_variant=default,
                targeting=fields.submap(f, "targeting"),
                metadata=metadata,
            )
        except FlagFileError as exc:
            raise RecordError(f"invalid flag: {exc}") from exc
        return cls(
            spec=spec,
            source=fields.text(f, "source", optional=True),
            source_hash=fields.text(f, "source_hash", optional=True),
            applied_by=fields.text(f, "applied_by", optional=True),
            applied_at=fields.optional_number(f, "applied_at", 0.0),
        )

    def public(self) -> dict[str, Any]:
        s = self.spec
        return {
            "key": s.key,
            "type": s.flag_type,
            "state": s.state,
            "variants": dict(s.variants),
            "default_variant": s.default_variant,
            "targeting": dict(s.targeting) if s.targeting else None,
            "metadata": dict(s.metadata),
            "source": self.source,
            "source_hash": self.source_hash,
            "applied_by": self.applied_by,
            "applied_at": self.applied_at,
        }

    def same_definition(self, other: FlagRecord) -> bool:
        return self.spec.to_flagd() == other.spec.to_flagd()


def decode_flag(parts: tuple[str, ...], value: bytes) -> FlagRecord:
    """The ``flags`` kind's decoder: the record must validate fully and name its own key."""
    record = FlagRecord.decode(value)
    if record.key != parts[0]:
        raise RecordError(f"flag record names key {record.key!r:.130}, stored under {parts[0]!r}")
    return record
