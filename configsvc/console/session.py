"""The console's sign-in: a bearer token exchanged once for a signed session cookie.

A browser cannot send ``Authorization: Bearer`` when a person follows a link, so the console's
login form takes the token (a POST, same origin only), checks it against the same token book as
the API, and sets ``holdfast_console``: HttpOnly (no script reads it), SameSite=Strict (no other
site's page makes the browser send it), Secure (HTTPS, or a loopback address, which browsers
count as secure), Path=/ui (the API never sees it), for at most ``SESSION_TTL_S``.

The cookie names the token by a keyed fingerprint (HMAC of its hash under the server's secret),
never the token itself, and carries no role: every request looks the fingerprint up in the
current token book, so a token removed from ``--tokens-file`` or given another role takes
effect on the next page, and a cookie cannot be forged or widened without the secret. The
secret is ``$HOLDFAST_CONSOLE_SECRET`` (replicas behind one address share sessions) or random
per process (a restart signs everyone out). Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Final

from configsvc.http import MAX_TOKEN_CHARS, Identity, TokenEntry, token_digest

COOKIE: Final = "holdfast_console"
SESSION_TTL_S: Final = 12 * 3600
MAX_COOKIE_CHARS: Final = 1024
FINGERPRINT_BYTES: Final = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(
        self,
        entries: tuple[TokenEntry, ...],
        secret: bytes,
        *,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("the console's session secret must be at least 32 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self._clock = clock
        self._by_fingerprint = {self._fingerprint(e.digest): e for e in entries}

    def _fingerprint(self, token_digest: bytes) -> str:
        mac = hmac.new(self._secret, b"token:" + token_digest, hashlib.sha256).digest()
        return _b64(mac[:FINGERPRINT_BYTES])

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, b"session:" + payload.encode(), hashlib.sha256).digest())

    def issue(self, token: str) -> tuple[str, Identity] | None:
        """The cookie value for a valid ``token`` and who it names; None for a wrong token."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        entry = self._entry(self._fingerprint(token_digest(token)))
        if entry is None:
            return None
        payload = _b64(
            json.dumps(
                {"f": self._fingerprint(entry.digest), "e": int(self._clock() + self.ttl_s)},
                separators=(",", ":"),
            ).encode()
        )
        return f"{payload}.{self._sign(payload)}", Identity(entry.subject, entry.role)

    def identity(self, cookie: str) -> Identity | None:
        """Who a cookie signs in, if it is ours, unexpired and its token is still accepted."""
        if not cookie or len(cookie) > MAX_COOKIE_CHARS or cookie.count(".") != 1:
            return None
        payload, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._sign(payload)):
            return None
        try:
            fields = json.loads(_unb64(payload))
            fingerprint, expires = str(fields["f"]), float(fields["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= self._clock():
            return None
        entry = self._entry(fingerprint)
        return None if entry is None else Identity(entry.subject, entry.role)

    def _entry(self, fingerprint: str) -> TokenEntry | None:
        found: TokenEntry | None = None
        for known, entry in self._by_fingerprint.items():  # no early exit: constant time
            if hmac.compare_digest(known, fingerprint):
                found = entry
        return found
