"""Which session a request belongs to: the ``X-Holdfast-Session`` header, else a header its
dialect names (Claude Code's ``X-Claude-Code-Session-Id``), else the session hint its dialect
finds in the body (OpenAI's ``user``, Anthropic's ``metadata.user_id``...).

Pure: no I/O. A malformed ``X-Holdfast-Session`` is the agent's bug and is refused; a dialect's
header or a hint belongs to some other tool (a hint is often an email or a display name), so
one that does not fit the id alphabet is hashed instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from holdfast.keyspace.keys import ID_RE
from sidecar.errors import InvalidRequest

SESSION_HEADER: Final = "X-Holdfast-Session"
HASHED_USER_PREFIX: Final = "u-"
HASHED_USER_HEX: Final = 32


def hashed_user(user: str) -> str:
    digest = hashlib.sha256(user.encode("utf-8", "surrogatepass")).hexdigest()
    return HASHED_USER_PREFIX + digest[:HASHED_USER_HEX]


def session_id(
    headers: Mapping[str, str], hint: str | None, hint_headers: tuple[str, ...] = ()
) -> str | None:
    """The request's session id, or None when it has none (it is then served unpinned).

    ``hint_headers``: the dialect's own session headers, tried in order after ours."""
    header = headers.get(SESSION_HEADER)
    if header is not None:
        if not ID_RE.fullmatch(header):
            raise InvalidRequest(
                f"header {SESSION_HEADER} {header!r:.140} is not a valid session id: use 1-128 "
                "characters of A-Z, a-z, 0-9, '.', '_', ':', '@' or '-', starting with a "
                "letter or digit",
                param=SESSION_HEADER,
            )
        return header
    for name in hint_headers:
        value = headers.get(name)
        if value:
            hint = value
            break
    if not hint:
        return None
    return hint if ID_RE.fullmatch(hint) else hashed_user(hint)
