"""HTTP/1.1 framing decisions of a response, and when its connection may serve another call.

Pure: llhttp (httptools) parses the bytes and enforces the message syntax (a bad status line,
conflicting or invalid Content-Length, Transfer-Encoding with Content-Length, bad chunk sizes);
what is decided here is what llhttp cannot know, or that this client must know first: where an
answer without length ends (at the connection's end, RFC 9112 section 6.3) and whether the
connection is clean enough to be reused.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

# A response head larger than this, or with more fields, is refused (aiohttp's client allows
# 8 KiB per line; providers send a few hundred bytes).
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_FIELDS: Final = 256
NO_BODY_STATUSES: Final = frozenset({204, 304})


class Framing(enum.Enum):
    NONE = "none"  # 1xx, 204, 304: the head is the whole answer
    LENGTH = "length"  # Content-Length
    CHUNKED = "chunked"  # Transfer-Encoding ending in chunked
    UNTIL_CLOSE = "until-close"  # neither: the body ends when the connection does


def body_framing(
    status: int, transfer_encoding: Sequence[str], content_length: Sequence[str]
) -> Framing:
    """How the body of a response to a GET/POST/DELETE is delimited (never HEAD, never CONNECT).

    ``transfer_encoding`` and ``content_length`` are every value of those fields, in order."""
    if status < 200 or status in NO_BODY_STATUSES:
        return Framing.NONE
    if transfer_encoding:
        codings = [c.strip().lower() for v in transfer_encoding for c in v.split(",")]
        codings = [c for c in codings if c]
        # Chunked must be the final coding; otherwise the body runs to the connection's end.
        return Framing.CHUNKED if codings and codings[-1] == "chunked" else Framing.UNTIL_CLOSE
    if content_length:
        return Framing.LENGTH
    return Framing.UNTIL_CLOSE


def may_reuse(
    *,
    complete: bool,
    keep_alive: bool,
    framing: Framing,
    half_closed: bool,
    unsent: int,
    failed: bool,
) -> bool:
    """Whether a connection may go back to the pool once its answer was handled.

    Only an answer read to its end (``complete``) on a connection both sides keep open
    (``keep_alive``: HTTP/1.1 without ``Connection: close``), whose request was sent whole
    (``unsent`` bytes still buffered: 0), that nobody half-closed or failed."""
    return (
        complete
        and keep_alive
        and framing is not Framing.UNTIL_CLOSE
        and not half_closed
        and unsent == 0
        and not failed
    )


def expired(idle_since: float, now: float, keepalive: float) -> bool:
    """An idle pooled connection older than ``keepalive`` seconds is closed, not reused: the
    provider may be about to close it (the request would race its FIN)."""
    return now - idle_since >= keepalive
