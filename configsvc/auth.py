"""Who may do what: one shared bearer token for mutations (and for reads from other hosts).

Token roles come later; until then every authenticated actor is recorded as ``token:<name>``,
where the name is the ``X-Holdfast-Actor`` header the CLI sends (default ``$USER``). With
``--allow-no-token`` (loopback-only throwaway use) actors are ``unauthenticated:<name>``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from configsvc.errors import InvalidRequest, Unauthorized
from holdfast.keyspace.keys import ID_RE

ACTOR_HEADER: Final = "X-Holdfast-Actor"
AUTH_HEADER: Final = "Authorization"
DEFAULT_ACTOR: Final = "unknown"
BEARER: Final = "bearer "


def is_loopback(remote: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback; False for anything unparsable."""
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def presented_token(headers: Mapping[str, str]) -> str:
    value = headers.get(AUTH_HEADER, "")
    if value[: len(BEARER)].lower() == BEARER:
        return value[len(BEARER) :].strip()
    return ""


def actor_name(headers: Mapping[str, str]) -> str:
    name = headers.get(ACTOR_HEADER, "").strip() or DEFAULT_ACTOR
    if not ID_RE.fullmatch(name):
        raise InvalidRequest(
            f"header {ACTOR_HEADER} must be 1-128 characters of letters, digits and ._:@-",
            param=ACTOR_HEADER,
        )
    return name


@dataclass(frozen=True, slots=True)
class Authorizer:
    token: str  # empty: authentication disabled (--allow-no-token)

    def __repr__(self) -> str:
        return f"Authorizer(enabled={bool(self.token)})"

    def check(self, *, mutation: bool, remote: str | None, headers: Mapping[str, str]) -> None:
        """Raise Unauthorized unless this request may proceed."""
        if not self.token:
            return
        if not mutation and is_loopback(remote):
            return
        presented = presented_token(headers)
        what = "changes" if mutation else "reads from other hosts"
        if not presented:
            raise Unauthorized(
                f"{what} need the configsvc token: send 'Authorization: Bearer <token>' "
                "(holdfastctl: --token or $HOLDFAST_TOKEN)"
            )
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            raise Unauthorized("wrong token")

    def actor(self, headers: Mapping[str, str]) -> str:
        """The audit actor of a request already allowed by ``check``."""
        prefix = "token" if self.token else "unauthenticated"
        return f"{prefix}:{actor_name(headers)}"
