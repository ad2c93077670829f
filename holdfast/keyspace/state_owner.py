"""Which release issued a piece of provider-held state (an OpenAI response or conversation id).

Written by the sidecar that saw the id issued (or first used, for a conversation), under the
same leases as pins, so it expires ``--pin-ttl`` after its last use; read by every sidecar of
the agent, which sends a request continuing that state to that release and no other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.keys import ID_RE

STATE_KINDS: Final = ("response", "conversation")


@dataclass(frozen=True, slots=True, kw_only=True)
class StateOwner:
    """``id`` (a provider's response or conversation id) was issued by ``release`` while
    serving ``session``; ``stored``: the provider keeps it (``store`` was not false)."""

    KIND: ClassVar[str] = "state_owner"
    agent: str
    id: str
    kind: str
    release: str
    session: str
    issued_at: float
    stored: bool = True
    touched_at: float = 0.0

    def __post_init__(self) -> None:
        check_name(self.agent, what="agent name")
        check_name(self.release, what="issuing release")
        for what, value in (("state id", self.id), ("session id", self.session)):
            if not ID_RE.fullmatch(value):
                raise RecordError(f"invalid {what} {value!r:.140}")
        if self.kind not in STATE_KINDS:
            raise RecordError(f"invalid state kind {self.kind!r:.40}")

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            agent=fields.name(f, "agent"),
            id=fields.text(f, "id"),
            kind=fields.text(f, "kind"),
            release=fields.name(f, "release"),
            session=fields.text(f, "session"),
            issued_at=fields.number(f, "issued_at"),
            stored=fields.flag(f, "stored") if "stored" in f else True,
            touched_at=fields.optional_number(f, "touched_at", 0.0),
        )

    def public(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "id": self.id,
            "kind": self.kind,
            "release": self.release,
            "session": self.session,
            "issued_at": self.issued_at,
            "stored": self.stored,
            "touched_at": self.touched_at,
        }
