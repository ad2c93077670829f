"""Where a call goes and the bytes of its request head: pure, no I/O.

A ``Target`` is parsed once per release and path (the sidecar prepares calls per release), so
per call only the head's text is joined and encoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from yarl import URL

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Methods whose requests carry a body even when it is empty (Content-Length: 0 is sent).
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
TOKEN_CHARS: Final = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
# Header names come from the sidecar's code, a handful in all: each is checked once.
MAX_CHECKED_NAMES: Final = 256
_CHECKED_NAMES: set[str] = set()


class BadTarget(ValueError):
    """A URL this client cannot call (not http/https, no host, a bad port)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One URL, ready to call: its pool key, where to connect, and the head's first lines."""

    scheme: str
    host: str  # lower case, IDNA-encoded, IPv6 without brackets
    port: int
    path: str  # path and query as sent on the request line
    host_header: str

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def key(self) -> tuple[str, str, int]:
        """Connections are pooled per (scheme, host, port)."""
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Target:
        try:
            parsed = URL(url)
            port = parsed.port
        except ValueError as exc:
            raise BadTarget(f"URL {url!r:.120} cannot be parsed") from exc
        scheme = parsed.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise BadTarget(f"URL {url!r:.120} is not http or https")
        host = (parsed.raw_host or "").lower()
        if not host or port is None or not 0 < port < 65536:
            raise BadTarget(f"URL {url!r:.120} has no host or a bad port")
        if parsed.user is not None or parsed.password is not None:
            raise BadTarget(f"URL {url!r:.120} carries credentials; use the release's key")
        shown = f"[{host}]" if ":" in host else host
        host_header = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        return cls(scheme, host, port, parsed.raw_path_qs or "/", host_header)


def encode_head(method: str, target: Target, headers: Mapping[str, str], body_len: int) -> bytes:
    """The request line and header block. Raises ValueError when a name or value would break
    the framing (a line break, a non-token name): nothing such is ever sent."""
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    breaks = len(lines) + 1
    if body_len or method in BODY_METHODS:
        lines.append(f"Content-Length: {body_len}\r\n")
        breaks += 1
    lines.append("\r\n")
    breaks += 1
    text = "".join(lines)
    # The only line breaks are the ones written above; one more means a value smuggled one in.
    if text.count("\n") != breaks or text.count("\r") != breaks:
        raise ValueError("a request header holds a line break")
    for name in () if _CHECKED_NAMES.issuperset(headers) else headers:
        if name not in _CHECKED_NAMES:
            if not name or not TOKEN_CHARS.issuperset(name):
                raise ValueError(f"request header name {name!r:.40} is not an HTTP token")
            if len(_CHECKED_NAMES) < MAX_CHECKED_NAMES:
                _CHECKED_NAMES.add(name)
    if method not in BODY_METHODS and not TOKEN_CHARS.issuperset(method):
        raise ValueError(f"method {method!r:.20} is not an HTTP token")
    return text.encode("utf-8")  # as aiohttp sends values: UTF-8
