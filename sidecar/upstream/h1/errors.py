"""The client's exception tree. Messages never quote what the provider sent: a provider may
echo the request's headers back, the provider key among them."""

from __future__ import annotations


class H1Error(Exception):
    """Any failure of a provider call below HTTP semantics (connect, framing, transport)."""


class ConnectFailed(H1Error):
    """No connection could be opened (refused, unreachable, TLS handshake, DNS, policy)."""


class ConnectionLost(H1Error):
    """The connection ended before the answer did (reset, or closed mid-message)."""


class MalformedResponse(H1Error):
    """The provider's bytes are not an HTTP/1.1 answer this client accepts."""


class ResponseTimeout(H1Error, TimeoutError):
    """A deadline passed: connect, the answer's head, the whole answer, or a stream's gap."""
