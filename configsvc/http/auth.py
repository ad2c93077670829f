"""Who may do what: bearer tokens with roles (viewer, operator, admin; see configsvc.http.access).

The audit actor is ``<subject>:<name>``: the subject is the token's (from ``--tokens-file``, or
``token`` for the single ``$HOLDFAST_TOKEN``) and the name the ``X-Holdfast-Actor`` header the CLI
sends (default ``$USER``; informative only, the subject is what was authenticated). With
``--allow-no-token`` (loopback-only throwaway use) actors are ``unauthenticated:<name>``.
Reads from loopback peers need no token unless ``--require-token-for-reads``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from configsvc.errors import Forbidden, InvalidRequest, Unauthorized
from configsvc.http.access import Role
from configsvc.http.tokens import LEGACY_SUBJECT, Identity, TokenBook, TokenEntry
from configsvc.settings import ACTOR_HEADER as ACTOR_HEADER
from holdfast.keyspace.keys import ID_RE

AUTH_HEADER: Final = "Authorization"
DEFAULT_ACTOR: Final = "unknown"
BEARER: Final = "bearer "
UNAUTHENTICATED: Final = "unauthenticated"
LOOPBACK_READER: Final = "loopback"


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
    """Checks a request's bearer token against the token book and the endpoint's role.

    ``token`` is the legacy single ``$HOLDFAST_TOKEN`` (role admin, subject ``token``); ``tokens``
    come from ``--tokens-file``. Neither: authentication is off (``--allow-no-token``).
    """

    token: str = ""
    tokens: tuple[TokenEntry, ...] = ()
    require_token_for_reads: bool = False
    book: TokenBook = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "book", TokenBook(self.tokens, self.token))

    def __repr__(self) -> str:
        return f"Authorizer(enabled={self.enabled}, tokens={len(self.tokens) + bool(self.token)})"

    @property
    def enabled(self) -> bool:
        return bool(self.book)

    def check(
        self,
        *,
        mutation: bool,
        remote: str | None,
        headers: Mapping[str, str],
        required: Role | None = None,
        also: frozenset[Role] = frozenset(),
    ) -> Identity:
        """The caller's identity, or Unauthorized (no/unknown token) / Forbidden (role too low)."""
        if not self.enabled:
            return Identity(UNAUTHENTICATED, Role.ADMIN)
        if not mutation and not self.require_token_for_reads and is_loopback(remote):
            return Identity(LOOPBACK_READER, Role.VIEWER)
        presented = presented_token(headers)
        what = (
            "changes"
            if mutation
            else "reads"
            if self.require_token_for_reads
            else ("reads from other hosts")
        )
        if not presented:
            raise Unauthorized(
                f"{what} need the configsvc token: send 'Authorization: Bearer <token>' "
                "(holdfastctl: --token or $HOLDFAST_TOKEN)"
            )
        identity = self.book.identify(presented)
        if identity is None:
            raise Unauthorized("unknown or wrong token")
        need = required or (Role.ADMIN if mutation else Role.VIEWER)
        if identity.role < need and identity.role not in also:
            raise Forbidden(
                f"the token of {identity.subject!r} has role {identity.role.label}; "
                f"this needs {need.label} or above"
            )
        return identity

    def actor(self, headers: Mapping[str, str], identity: Identity | None = None) -> str:
        """The audit actor: ``<subject>:<name from X-Holdfast-Actor>``."""
        if identity is None:
            identity = Identity(LEGACY_SUBJECT if self.enabled else UNAUTHENTICATED, Role.ADMIN)
        return f"{identity.subject}:{actor_name(headers)}"
