"""Provider kinds: how each kind of provider is authenticated, versioned and asked one question.

A release names its provider kind (``Release.provider``); a dialect names the kind that serves it
(``Dialect.provider_api``), and a request reaches only releases of that kind. What differs
between kinds on the wire, beyond the dialects' bodies, is written here once:

* ``openai`` -- the key as ``Authorization: Bearer KEY``; no version header; agent headers are
  never forwarded.
* ``anthropic`` -- the key as ``x-api-key: KEY``; ``anthropic-version`` from the release
  (``Release.api_version``, else ``2023-06-01``) unless the agent sent its own; the agent's
  ``anthropic-beta`` (and ``anthropic-version``) forwarded as sent.

``one_turn`` is the smallest whole request of the kind (configsvc's warm-up probe and prompt
evaluation): a system text, one user turn, an output cap. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

API_VERSION_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class UnknownProvider(ValueError):
    """A provider kind no entry of ``PROVIDERS`` describes."""


@dataclass(frozen=True, slots=True)
class ProviderKind:
    name: str
    key_header: str  # where the release's key goes
    key_prefix: str  # what precedes the key in that header
    chat_dialect: str  # the dialect (holdfast.dialects) of its one-turn generation endpoint
    chat_path: str  # that endpoint, relative to a release's base_url
    version_header: str = ""  # the header that names the API version ("": none)
    default_version: str = ""
    forwarded: tuple[str, ...] = ()  # the agent's request headers passed on as sent (lower case)

    def headers(self, key: str, api_version: str, agent: Mapping[str, str]) -> dict[str, str]:
        """The provider-specific request headers: the agent's forwarded ones, the version (the
        agent's if it sent one, else the release's, else the kind's default), the key."""
        out: dict[str, str] = {}
        for name in self.forwarded:
            value = agent.get(name)
            if value:
                out[name] = value
        if self.version_header and self.version_header not in out:
            out[self.version_header] = api_version or self.default_version
        if key:
            out[self.key_header] = self.key_prefix + key
        return out

    def one_turn(
        self, model: str, system: str, user: str, max_tokens: int, *, temperature: float | None
    ) -> dict[str, Any]:
        """The body of a one-turn, non-streamed generation request of this kind."""
        body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "stream": False}
        if self.chat_dialect == "anthropic.messages":
            if system:
                body["system"] = system
            body["messages"] = [{"role": "user", "content": user}]
        else:
            messages = [{"role": "system", "content": system}] if system else []
            body["messages"] = [*messages, {"role": "user", "content": user}]
        if temperature is not None:
            body["temperature"] = temperature
        return body


PROVIDERS: Final[Mapping[str, ProviderKind]] = {
    "openai": ProviderKind(
        name="openai",
        key_header="Authorization",
        key_prefix="Bearer ",
        chat_dialect="openai.chat",
        chat_path="/chat/completions",
    ),
    "anthropic": ProviderKind(
        name="anthropic",
        key_header="x-api-key",
        key_prefix="",
        chat_dialect="anthropic.messages",
        chat_path="/messages",
        version_header="anthropic-version",
        default_version="2023-06-01",
        forwarded=("anthropic-version", "anthropic-beta"),
    ),
}
DEFAULT_PROVIDER: Final = "openai"


def provider(name: str) -> ProviderKind:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProvider(
            f"unsupported provider {name!r:.40}; supported: {', '.join(PROVIDERS)}"
        ) from None


def check_api_version(kind: str, version: str) -> str:
    """A release's API version for provider ``kind`` ("" = the kind's default); ValueError when
    the kind takes none or the text cannot be a header value."""
    entry = provider(kind)
    if not version:
        return ""
    if not entry.version_header:
        raise ValueError(f"provider {kind} takes no API version (it sends no version header)")
    if not API_VERSION_RE.fullmatch(version):
        raise ValueError(
            f"invalid API version {version!r:.70}: 1-64 characters of letters, digits and ._-"
        )
    return version
