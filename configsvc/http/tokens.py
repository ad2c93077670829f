"""configsvc's bearer tokens: a file of ``{subject, role, sha256}`` lines (hashes, never tokens).

One JSON object per line; blank lines and lines starting with ``#`` are skipped. Create a line::

    TOKEN=$(openssl rand -hex 32)
    printf '{"subject":"alice","role":"operator","sha256":"%s"}\\n' \\
        "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)" >> tokens.jsonl

A line of role ``sidecar`` (the token sidecars send health beats with) may add ``"agent"``: the
token then speaks for that agent's sidecars only, as each agent's etcd user writes only its own
agent's keys.

A presented token is hashed and compared with every entry by ``hmac.compare_digest`` (no early
exit), so neither the timing nor the file reveals a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from configsvc.http.access import Role
from holdfast.json_limits import JsonRefused, loads_bounded
from holdfast.names import ID_RE, NAME_RE

MAX_FILE_BYTES: Final = 1 << 20
MAX_TOKEN_CHARS: Final = 4096
LINE_DEPTH: Final = 8  # a line is one flat object; deeper is refused before it can recurse
LEGACY_SUBJECT: Final = "token"  # the single $HOLDFAST_TOKEN: admin, audited as token:<actor>
# What one configsvc replica presents to another from a background task (the console asking an
# agent's owners for its health): a viewer token derived from the console secret the replicas
# share. Whoever holds that secret can sign console sessions of any role already, so the token
# grants nothing the secret did not.
REPLICA_SUBJECT: Final = "replica"
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_FIELDS: Final = frozenset({"subject", "role", "sha256"})
_OPTIONAL: Final = frozenset({"agent"})


class TokensFileError(ValueError):
    """The tokens file cannot be used; the message names the line (never a hash)."""


@dataclass(frozen=True, slots=True)
class Identity:
    subject: str
    role: Role
    agent: str = ""  # a sidecar token bound to one agent ("": any)


@dataclass(frozen=True, slots=True, repr=False)
class TokenEntry:
    subject: str
    role: Role
    digest: bytes  # sha256 of the token
    agent: str = ""

    def __repr__(self) -> str:
        bound = f", agent {self.agent}" if self.agent else ""
        return f"TokenEntry({self.subject}, {self.role.label}{bound})"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def replica_token(secret: bytes) -> str:
    """The replicas' viewer token, derived from their shared console secret."""
    return hmac.new(secret, b"holdfast configsvc replica", hashlib.sha256).hexdigest()


def replica_entry(secret: bytes) -> TokenEntry:
    return TokenEntry(REPLICA_SUBJECT, Role.VIEWER, digest(replica_token(secret)))


def parse_tokens(text: str, *, source: str = "tokens file") -> tuple[TokenEntry, ...]:
    entries: list[TokenEntry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        try:
            obj = loads_bounded(line, LINE_DEPTH)
        except JsonRefused as exc:  # bad syntax, nesting, NaN, a 4300-digit number
            raise TokensFileError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(obj, dict):
            raise TokensFileError(f"{where}: not a JSON object")
        unknown = sorted(set(obj) - _FIELDS - _OPTIONAL)
        if unknown or not set(obj) >= _FIELDS:
            what = f"unknown field(s) {unknown}" if unknown else "missing field(s)"
            raise TokensFileError(f"{where}: {what}; expected subject, role and sha256")
        subject, role, hexdigest = obj["subject"], obj["role"], obj["sha256"]
        if not isinstance(subject, str) or not ID_RE.fullmatch(subject):
            raise TokensFileError(f"{where}: subject must be 1-128 of letters, digits, ._:@-")
        if not isinstance(role, str):
            raise TokensFileError(f"{where}: role must be viewer, operator, admin or sidecar")
        try:
            parsed = Role.parse(role)
        except ValueError as exc:
            raise TokensFileError(f"{where}: {exc}") from None
        if not isinstance(hexdigest, str) or not _HEX64.fullmatch(hexdigest):
            raise TokensFileError(f"{where}: sha256 must be 64 lowercase hex digits")
        agent = obj.get("agent", "")
        if agent and parsed != Role.SIDECAR:
            raise TokensFileError(f"{where}: only a token of role sidecar is bound to an agent")
        if not isinstance(agent, str) or (agent and not NAME_RE.fullmatch(agent)):
            raise TokensFileError(f"{where}: agent must be an agent name")
        entries.append(TokenEntry(subject, parsed, bytes.fromhex(hexdigest), agent))
    subjects = [e.subject for e in entries]
    if len(set(subjects)) != len(subjects):
        raise TokensFileError(f"{source}: a subject appears twice")
    if len({e.digest for e in entries}) != len(entries):
        raise TokensFileError(f"{source}: two lines have the same token hash")
    return tuple(entries)


def load_tokens_file(path: Path) -> tuple[TokenEntry, ...]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise TokensFileError(f"--tokens-file {path}: cannot read it ({exc.strerror})") from exc
    if len(data) > MAX_FILE_BYTES:
        raise TokensFileError(f"--tokens-file {path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TokensFileError(f"--tokens-file {path}: not UTF-8") from exc
    entries = parse_tokens(text, source=f"--tokens-file {path}")
    if not entries:
        raise TokensFileError(f"--tokens-file {path}: no token lines")
    return entries


class TokenBook:
    """Every accepted token: the file's entries plus the legacy single token (admin)."""

    def __init__(self, entries: tuple[TokenEntry, ...] = (), legacy_token: str = "") -> None:
        book = list(entries)
        if legacy_token:
            book.append(TokenEntry(LEGACY_SUBJECT, Role.ADMIN, digest(legacy_token)))
        self._entries = tuple(book)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __repr__(self) -> str:
        return f"TokenBook({len(self._entries)} tokens)"

    @property
    def entries(self) -> tuple[TokenEntry, ...]:
        """Every accepted token's subject, role and hash (the legacy token as ``token``)."""
        return self._entries

    def identify(self, presented: str) -> Identity | None:
        if not presented or len(presented) > MAX_TOKEN_CHARS:
            return None
        wanted = digest(presented)
        found: TokenEntry | None = None
        for entry in self._entries:  # every entry, match or not: constant in the match's place
            if hmac.compare_digest(wanted, entry.digest):
                found = entry
        return None if found is None else Identity(found.subject, found.role, found.agent)
