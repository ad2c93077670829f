"""A session's pin: the release that serves it until an operator migrates it deliberately."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.keys import ID_RE
from holdfast.keyspace.prompt import validate_pinned_prompts


@dataclass(frozen=True, slots=True, kw_only=True)
class Pin:
    """Written by the sidecar that served the session first, under a lease (sessions expire).

    ``revision`` is the config revision the choice was made at; ``touched_at`` is when the pin
    was last attached to a fresh lease. A migration records where the session came from, and
    ``notified`` turns true once a sidecar has told the agent (``X-Holdfast-Migrated-From``).
    """

    KIND: ClassVar[str] = "pin"
    agent: str
    session: str
    release: str
    pinned_at: float
    revision: int
    touched_at: float = 0.0
    migrated_from: str = ""
    migrated_at: float = 0.0
    migrated_by: str = ""
    notified: bool = False
    # prompt -> version resolved at the session's first turn, for prompts its release takes
    # as "active": a version activated later never changes this session's prompt
    prompts: Mapping[str, str] = field(default_factory=dict)
    experiment: str = ""  # "<experiment>/<variant>" when an experiment assigned the session

    def __post_init__(self) -> None:
        check_name(self.agent, what="agent name")
        check_name(self.release, what="pinned release")
        check_name(self.migrated_from, what="migrated-from release", optional=True)
        if not ID_RE.fullmatch(self.session):
            raise RecordError(f"invalid session id {self.session!r:.140}")
        if self.revision < 0:
            raise RecordError("pin revision must be 0 or more")
        if self.prompts:
            object.__setattr__(self, "prompts", validate_pinned_prompts(self.prompts))
        if len(self.experiment) > 200:
            raise RecordError("pin experiment is limited to 200 characters")

    @property
    def needs_notice(self) -> bool:
        return bool(self.migrated_from) and not self.notified

    def touched(self, now: float) -> Pin:
        return dataclasses.replace(self, touched_at=now)

    def migrated(self, to: str, *, actor: str, now: float) -> Pin:
        return dataclasses.replace(
            self,
            release=to,
            migrated_from=self.release,
            migrated_at=now,
            migrated_by=actor,
            notified=False,
        )

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            agent=fields.name(f, "agent"),
            session=fields.text(f, "session"),
            release=fields.name(f, "release"),
            pinned_at=fields.number(f, "pinned_at"),
            revision=fields.integer(f, "revision"),
            touched_at=fields.optional_number(f, "touched_at", 0.0),
            migrated_from=fields.name(f, "migrated_from", optional=True),
            migrated_at=fields.optional_number(f, "migrated_at", 0.0),
            migrated_by=fields.text(f, "migrated_by", optional=True),
            notified=fields.flag(f, "notified"),
            prompts=fields.submap(f, "prompts") or {},
            experiment=fields.text(f, "experiment", optional=True),
        )

    def public(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "session": self.session,
            "release": self.release,
            "pinned_at": self.pinned_at,
            "revision": self.revision,
            "touched_at": self.touched_at,
            "migrated_from": self.migrated_from,
            "migrated_at": self.migrated_at,
            "migrated_by": self.migrated_by,
            "notified": self.notified,
            "prompts": dict(self.prompts),
            "experiment": self.experiment,
        }
