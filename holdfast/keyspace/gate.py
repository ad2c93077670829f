"""The health gate's evaluation of one agent's rollout (``gates/<agent>``), written by the replica
that holds the agent's health, read by the rollout controller wherever it runs.

Health beats go to the agent's owner replicas, not to etcd, so the leader that acts on a rollout
may not hold the agent's windows; the owner evaluates the rollout's policy on every beat that
brings the canary new data and records the outcome here. ``data_version`` moves with that data,
so the controller counts one failing evaluation per new data, as it does locally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.keys import ID_RE

VERDICTS: Final = ("pass", "fail", "inconclusive")
MAX_CHECKS: Final = 256
_CHECK_TEXT: Final = ("gate", "scope", "verdict", "detail")


@dataclass(frozen=True, slots=True, kw_only=True)
class GateEvaluation:
    KIND: ClassVar[str] = "gate"
    agent: str
    release: str  # the rollout's release; with started_at, which rollout was judged
    started_at: float
    replica: str  # the replica that evaluated it (the agent's first health owner then)
    data_version: int
    at: float
    verdict: str
    # Each check as configsvc reports it: gate, scope, verdict, canary, stable, limit, detail.
    checks: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_name(self.agent, what="agent name")
        check_name(self.release, what="rollout release")
        if not ID_RE.fullmatch(self.replica):
            raise RecordError(f"invalid replica id {self.replica!r:.140}")
        if self.verdict not in VERDICTS:
            raise RecordError(f"invalid gate verdict {self.verdict!r:.40}")
        if len(self.checks) > MAX_CHECKS:
            raise RecordError(f"a gate evaluation carries at most {MAX_CHECKS} checks")
        object.__setattr__(self, "checks", tuple(_check(c) for c in self.checks))

    @property
    def rollout_key(self) -> tuple[str, float]:
        return (self.release, self.started_at)

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            agent=fields.name(f, "agent"),
            release=fields.name(f, "release"),
            started_at=fields.number(f, "started_at"),
            replica=fields.text(f, "replica"),
            data_version=fields.integer(f, "data_version"),
            at=fields.number(f, "at"),
            verdict=fields.text(f, "verdict"),
            checks=tuple(fields.maps(f, "checks")),
        )

    def public(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "release": self.release,
            "started_at": self.started_at,
            "replica": self.replica,
            "data_version": self.data_version,
            "at": self.at,
            "verdict": self.verdict,
            "checks": [dict(c) for c in self.checks],
        }


def _check(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RecordError("a gate check must be a map")
    out: dict[str, Any] = {}
    for name in _CHECK_TEXT:
        value = raw.get(name)
        if not isinstance(value, str) or len(value) > fields.MAX_TEXT:
            raise RecordError(f"gate check field {name!r} must be a string")
        out[name] = value
    if out["verdict"] not in VERDICTS:
        raise RecordError(f"invalid gate check verdict {out['verdict']!r:.40}")
    for name in ("canary", "stable", "limit"):
        value = raw.get(name)
        if value is None and name != "limit":
            out[name] = None
            continue
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RecordError(f"gate check field {name!r} must be a number")
        if not math.isfinite(value):
            raise RecordError(f"gate check field {name!r} must be finite")
        out[name] = float(value)
    return out
