"""A live configsvc replica (``members/<replica>``, under the replica's lease).

Sidecars read the members to know where their health goes (``holdfast.health_owners``); replicas
read them to know which agents' health they hold and where to ask for the others'. The lease is
what makes an entry mean "alive": a replica that dies stops refreshing it and etcd removes the key
within the TTL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.keys import ID_RE
from holdfast.keyspace.records import validate_base_url


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    KIND: ClassVar[str] = "member"
    replica: str
    url: str  # the replica's API as sidecars and the other replicas reach it: http(s)://host:port
    started_at: float

    def __post_init__(self) -> None:
        if not ID_RE.fullmatch(self.replica):
            raise RecordError(f"invalid replica id {self.replica!r:.140}")
        object.__setattr__(self, "url", validate_base_url(self.url))

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            replica=fields.text(f, "replica"),
            url=fields.text(f, "url"),
            started_at=fields.number(f, "started_at"),
        )

    def public(self) -> dict[str, Any]:
        return {"replica": self.replica, "url": self.url, "started_at": self.started_at}
