"""The API's HTTP plumbing, below every concern: who may call what (``access``, ``auth``,
``tokens``), the one middleware and error shape (``middleware``), the helpers every handler
uses (``handlers``), and the pieces request bodies are parsed with (``payloads``).

Concerns import these names from here; nothing in this package knows any concern.
"""

from configsvc.http.access import Role, required_role
from configsvc.http.auth import Authorizer
from configsvc.http.handlers import (
    AUTH_KEY,
    BODY_LIMIT_KEY,
    HOSTS_KEY,
    IDENTITY_KEY,
    SELF_AUTHENTICATED_KEY,
    UPSTREAM_KEY,
    Handler,
    actor_of,
    admit_upstream,
    agent_of,
    read_body,
    read_document,
    release_of,
    reply,
)
from configsvc.http.middleware import error_middleware, error_response
from configsvc.http.payloads import (
    MAX_JSON_DEPTH,
    HistoryQuery,
    bounded_json,
    checked,
    name,
    parse_object,
    text,
)
from configsvc.http.tokens import (
    MAX_TOKEN_CHARS,
    Identity,
    TokenEntry,
    TokensFileError,
    load_tokens_file,
    replica_entry,
    replica_token,
)
from configsvc.http.tokens import digest as token_digest

__all__ = [
    "AUTH_KEY",
    "BODY_LIMIT_KEY",
    "HOSTS_KEY",
    "IDENTITY_KEY",
    "MAX_JSON_DEPTH",
    "MAX_TOKEN_CHARS",
    "SELF_AUTHENTICATED_KEY",
    "UPSTREAM_KEY",
    "Authorizer",
    "Handler",
    "HistoryQuery",
    "Identity",
    "Role",
    "TokenEntry",
    "TokensFileError",
    "actor_of",
    "admit_upstream",
    "agent_of",
    "bounded_json",
    "checked",
    "error_middleware",
    "error_response",
    "load_tokens_file",
    "name",
    "parse_object",
    "read_body",
    "read_document",
    "release_of",
    "replica_entry",
    "replica_token",
    "reply",
    "required_role",
    "text",
    "token_digest",
]
