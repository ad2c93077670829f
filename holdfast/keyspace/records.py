"""Typed records stored under the keyspace. Each knows its kind and validates itself strictly."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self
from urllib.parse import urlsplit

from holdfast.contracts import semver
from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import MAX_TEXT
from holdfast.keyspace.keys import NAME_RE
from holdfast.keyspace.prompt import validate_release_prompts
from holdfast.providers import DEFAULT_PROVIDER, check_api_version

MODEL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
ENV_VAR_RE: Final = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
MAX_RELEASE_CONTRACTS: Final = 256
CONTRACT_POLICIES: Final = ("enforce", "rewrite", "report")
MAX_MCP_TOOLSETS: Final = 32
MAX_MCP_BACKENDS: Final = 8  # per tool set


def validate_model(model: str) -> str:
    if not MODEL_RE.fullmatch(model):
        raise RecordError(
            f"invalid model {model!r:.140}: 1-128 characters of letters, digits and ._:/@+-"
        )
    return model


def validate_base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RecordError(f"invalid base URL {url!r:.200}: need http(s)://host[:port][/path]")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise RecordError(f"invalid base URL {url!r:.200}: no query, fragment or credentials")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise RecordError(f"invalid base URL {url!r:.200}: {exc}") from exc
    return url.rstrip("/")


def validate_contracts(contracts: Mapping[str, str], policy: str) -> dict[str, str]:
    """A release's ``{tool: contract version}`` map and its optional policy override."""
    if len(contracts) > MAX_RELEASE_CONTRACTS:
        raise RecordError(f"a release names at most {MAX_RELEASE_CONTRACTS} tool contracts")
    for tool, version in contracts.items():
        if not isinstance(tool, str) or not NAME_RE.fullmatch(tool):
            raise RecordError(f"invalid tool name {tool!r:.70} in contracts")
        if not isinstance(version, str) or not semver.is_version(version):
            raise RecordError(f"invalid contract version {version!r:.40} for tool {tool}")
    if policy and policy not in CONTRACT_POLICIES:
        raise RecordError(
            f"invalid contract policy {policy!r:.40}; use one of {', '.join(CONTRACT_POLICIES)}"
        )
    return dict(sorted(contracts.items()))


def validate_mcp(toolsets: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """A release's MCP tool sets: ``{toolset: (backend URL, ...)}``, served at ``/mcp/<toolset>``.

    Which of the backends' tools a session sees, and in which schema, is the release's
    ``contracts`` map: the pinned contract versions whose backend is one of the tool set's."""
    if len(toolsets) > MAX_MCP_TOOLSETS:
        raise RecordError(f"a release names at most {MAX_MCP_TOOLSETS} MCP tool sets")
    checked: dict[str, tuple[str, ...]] = {}
    for toolset, urls in toolsets.items():
        if not isinstance(toolset, str) or not NAME_RE.fullmatch(toolset):
            raise RecordError(f"invalid MCP tool set name {toolset!r:.70}")
        if isinstance(urls, str) or not isinstance(urls, list | tuple) or not urls:
            raise RecordError(f"MCP tool set {toolset} needs a list of backend URLs")
        if len(urls) > MAX_MCP_BACKENDS:
            raise RecordError(f"MCP tool set {toolset} has more than {MAX_MCP_BACKENDS} backends")
        found: list[str] = []
        for url in urls:
            if not isinstance(url, str):
                raise RecordError(f"MCP tool set {toolset}: a backend URL must be a string")
            try:
                clean = validate_base_url(url)
            except RecordError as exc:
                raise RecordError(f"MCP tool set {toolset}: {exc}") from exc
            if clean not in found:
                found.append(clean)
        checked[toolset] = tuple(found)
    return dict(sorted(checked.items()))


def validate_embedding(model: str, index_version: str) -> None:
    """A release's embedding model (optional) and the index version label that goes with it."""
    if model:
        validate_model(model)
    if index_version:
        if not model:
            raise RecordError("an index version needs an embedding model")
        if not MODEL_RE.fullmatch(index_version):
            raise RecordError(
                f"invalid index version {index_version!r:.140}: 1-128 characters of letters, "
                "digits and ._:/@+-"
            )


def validate_env_var(name: str) -> str:
    if name and not ENV_VAR_RE.fullmatch(name):
        raise RecordError(f"invalid environment variable name {name!r:.140}")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """An immutable bundle an agent's sessions are served by."""

    KIND: ClassVar[str] = "release"
    agent: str
    name: str
    model: str
    base_url: str
    api_key_env: str = ""
    provider: str = DEFAULT_PROVIDER  # a kind of holdfast.providers.PROVIDERS
    api_version: str = ""  # the provider API version it sends ("": the kind's default)
    created_at: float = 0.0
    created_by: str = ""
    description: str = ""
    # tool -> contract version this release pins; the policy ("" = each contract's) overrides
    contracts: Mapping[str, str] = field(default_factory=dict)
    contract_policy: str = ""
    # prompt -> version ("3"), or "active": the prompt's active version at each session's start
    prompts: Mapping[str, str] = field(default_factory=dict)
    # MCP tool set -> backend URLs (additive: readers without it ignore the field)
    mcp: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The model that serves this release's embeddings ("": the release refuses embeddings), and
    # a label for the vector index built with it: vectors of two releases compare only when
    # both are the same.
    embedding_model: str = ""
    index_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", validate_release_prompts(dict(self.prompts)))
        object.__setattr__(self, "mcp", validate_mcp(self.mcp))
        object.__setattr__(
            self, "contracts", validate_contracts(self.contracts, self.contract_policy)
        )
        for what, value in (("agent", self.agent), ("release", self.name)):
            if not NAME_RE.fullmatch(value):
                raise RecordError(f"invalid {what} name {value!r:.70}")
        validate_model(self.model)
        validate_embedding(self.embedding_model, self.index_version)
        object.__setattr__(self, "base_url", validate_base_url(self.base_url))
        validate_env_var(self.api_key_env)
        try:
            check_api_version(self.provider, self.api_version)
        except ValueError as exc:  # an unknown kind too (UnknownProvider)
            raise RecordError(str(exc)) from exc
        if len(self.description) > MAX_TEXT or len(self.created_by) > MAX_TEXT:
            raise RecordError(f"description and created_by are limited to {MAX_TEXT} characters")

    def model_for(self, operation: str) -> str:
        """The concrete model that serves ``operation`` ("chat", "embeddings"); "" for none."""
        return self.embedding_model if operation == "embeddings" else self.model

    def encode(self) -> bytes:
        fields: dict[str, Any] = {
            "agent": self.agent,
            "name": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "provider": self.provider,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "description": self.description,
            "contracts": dict(self.contracts),
            "contract_policy": self.contract_policy,
            "prompts": dict(self.prompts),
            "embedding_model": self.embedding_model,
            "index_version": self.index_version,
        }
        if self.mcp:  # optional fields: records without them read as before
            fields["mcp"] = {k: list(v) for k, v in self.mcp.items()}
        if self.api_version:
            fields["api_version"] = self.api_version
        return encode_record(self.KIND, fields)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        contracts = fields.submap(f, "contracts") or {}
        return cls(
            agent=fields.name(f, "agent"),
            name=fields.name(f, "name"),
            model=fields.text(f, "model"),
            base_url=fields.text(f, "base_url"),
            api_key_env=fields.text(f, "api_key_env", optional=True),
            provider=fields.text(f, "provider", optional=True) or DEFAULT_PROVIDER,
            api_version=fields.text(f, "api_version", optional=True),
            created_at=fields.number(f, "created_at"),
            created_by=fields.text(f, "created_by", optional=True),
            description=fields.text(f, "description", optional=True),
            contracts=contracts,
            contract_policy=fields.text(f, "contract_policy", optional=True),
            prompts=fields.submap(f, "prompts") or {},
            mcp=fields.submap(f, "mcp") or {},
            embedding_model=fields.text(f, "embedding_model", optional=True),
            index_version=fields.text(f, "index_version", optional=True),
        )

    def public(self) -> dict[str, Any]:
        """What the API shows: everything, since the key itself never lives in etcd."""
        return {
            "agent": self.agent,
            "release": self.name,
            "model": self.model,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "provider": self.provider,
            "api_version": self.api_version,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "description": self.description,
            "contracts": dict(self.contracts),
            "contract_policy": self.contract_policy,
            "prompts": dict(self.prompts),
            "mcp": {k: list(v) for k, v in self.mcp.items()},
            "embedding_model": self.embedding_model,
            "index_version": self.index_version,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """Who changed what, when and why, with the before and after of the record."""

    KIND: ClassVar[str] = "audit"
    actor: str
    action: str
    target: str
    at: float
    reason: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> bytes:
        return encode_record(
            self.KIND,
            {
                "actor": self.actor,
                "action": self.action,
                "target": self.target,
                "at": self.at,
                "reason": self.reason,
                "before": self.before,
                "after": self.after,
                "extra": self.extra,
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        before, after, extra = f.get("before"), f.get("after"), f.get("extra", {})
        for name, value in (("before", before), ("after", after)):
            if value is not None and not isinstance(value, dict):
                raise RecordError(f"field {name!r} must be a map or nil")
        if not isinstance(extra, dict):
            raise RecordError("field 'extra' must be a map")
        return cls(
            actor=fields.text(f, "actor"),
            action=fields.text(f, "action"),
            target=fields.text(f, "target"),
            at=fields.number(f, "at"),
            reason=fields.text(f, "reason", optional=True),
            before=before,
            after=after,
            extra=extra,
        )
