"""Bodies of the release and route endpoints: create a release, set stable, roll back, aliases.

Pure parsing on the shared pieces of ``configsvc.http.payloads``: unknown fields are refused by
name, values are checked with the records' own validators and refused with 400 naming the
field, so what reaches ``ConfigService`` can be stored as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from configsvc.errors import InvalidRequest
from configsvc.http import checked, name, parse_object, text
from holdfast.keyspace import RecordError
from holdfast.keyspace.prompt import validate_release_prompts
from holdfast.keyspace.records import (
    validate_base_url,
    validate_contracts,
    validate_embedding,
    validate_env_var,
    validate_mcp,
    validate_model,
)
from holdfast.providers import PROVIDERS, check_api_version

MAX_ALIASES: Final = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRelease:
    release: str
    model: str
    base_url: str
    api_key_env: str = ""
    provider: str = "openai"
    api_version: str = ""  # "": the provider kind's default
    description: str = ""
    reason: str = ""
    contracts: dict[str, str] = field(default_factory=dict)  # tool -> contract version
    contract_policy: str = ""
    prompts: dict[str, str] = field(default_factory=dict)  # name -> N | "active" | "current"
    mcp: dict[str, tuple[str, ...]] = field(default_factory=dict)  # tool set -> backend URLs
    embedding_model: str = ""
    index_version: str = ""

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"release", "model", "base_url", "api_key_env", "provider", "description", "reason"}
        | {"contracts", "contract_policy", "prompts", "embedding_model", "index_version"}
        | {"mcp", "api_version"}
    )

    @classmethod
    def parse(cls, raw: bytes) -> NewRelease:
        obj = parse_object(raw, cls.FIELDS)
        provider = text(obj, "provider") or "openai"
        if provider not in PROVIDERS:
            raise InvalidRequest(
                f"unsupported provider {provider!r:.40}; supported: {', '.join(PROVIDERS)}",
                param="provider",
            )
        embedding = _embedding(obj)
        try:
            api_version = check_api_version(provider, text(obj, "api_version"))
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="api_version") from exc
        return cls(
            release=name(text(obj, "release", required=True), what="release", param="release"),
            model=checked("model", validate_model, text(obj, "model", required=True)),
            base_url=checked("base_url", validate_base_url, text(obj, "base_url", required=True)),
            api_key_env=checked("api_key_env", validate_env_var, text(obj, "api_key_env")),
            provider=provider,
            api_version=api_version,
            description=text(obj, "description"),
            reason=text(obj, "reason"),
            **_release_contracts(obj),
            prompts=release_prompts(obj.get("prompts")),
            mcp=release_mcp(obj.get("mcp")),
            embedding_model=embedding[0],
            index_version=embedding[1],
        )


def release_mcp(raw: Any) -> dict[str, tuple[str, ...]]:
    """``{toolset: [backend URL, ...]}``: the MCP tool sets the release serves."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRequest("field 'mcp' must be an object {toolset: [URL, ...]}", param="mcp")
    try:
        return validate_mcp(raw)
    except RecordError as exc:
        raise InvalidRequest(str(exc), param="mcp") from exc


def _embedding(obj: Mapping[str, Any]) -> tuple[str, str]:
    model, index = text(obj, "embedding_model"), text(obj, "index_version")
    try:
        validate_embedding(model, index)
    except RecordError as exc:
        param = "embedding_model" if model and "model" in str(exc) else "index_version"
        raise InvalidRequest(str(exc), param=param) from exc
    return model, index


def release_prompts(raw: Any) -> dict[str, str]:
    """``{prompt: version}``: a number, "active" (follow the active version) or "current"
    (the active version now, resolved once at creation)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidRequest("field 'prompts' must be an object {name: version}", param="prompts")
    special = {"active", "current"}
    try:
        validate_release_prompts({k: "1" if v in special else v for k, v in raw.items()})
    except RecordError as exc:
        raise InvalidRequest(str(exc), param="prompts") from exc
    return dict(sorted(raw.items()))


def _release_contracts(obj: Mapping[str, Any]) -> dict[str, Any]:
    contracts = obj.get("contracts") or {}
    if not isinstance(contracts, dict):
        raise InvalidRequest(
            "field 'contracts' must be an object {tool: version}", param="contracts"
        )
    policy = text(obj, "contract_policy")
    try:
        checked = validate_contracts(contracts, policy)
    except RecordError as exc:
        param = "contract_policy" if "policy" in str(exc) else "contracts"
        raise InvalidRequest(str(exc), param=param) from exc
    return {"contracts": checked, "contract_policy": policy}


@dataclass(frozen=True, slots=True, kw_only=True)
class SetStable:
    release: str
    reason: str = ""
    if_revision: int | None = None
    allow_provider_change: bool = False

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"release", "reason", "if_revision", "allow_provider_change"}
    )

    @classmethod
    def parse(cls, raw: bytes) -> SetStable:
        obj = parse_object(raw, cls.FIELDS)
        if_revision = obj.get("if_revision")
        if if_revision is not None and (
            isinstance(if_revision, bool) or not isinstance(if_revision, int) or if_revision < 0
        ):
            raise InvalidRequest(
                "field 'if_revision' must be a non-negative integer (0: the route must not exist)",
                param="if_revision",
            )
        return cls(
            release=name(text(obj, "release", required=True), what="release", param="release"),
            reason=text(obj, "reason"),
            if_revision=if_revision,
            allow_provider_change=allowed(obj),
        )


def allowed(obj: Mapping[str, Any], field: str = "allow_provider_change") -> bool:
    """The ``allow_provider_change`` flag of a body (configsvc.releases.providers)."""
    value = obj.get(field, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"field {field!r} must be true or false", param=field)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollback:
    reason: str = ""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"reason"})

    @classmethod
    def parse(cls, raw: bytes) -> Rollback:
        return cls(reason=text(parse_object(raw, cls.FIELDS, empty_ok=True), "reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAliases:
    aliases: tuple[str, ...]
    reason: str = ""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"aliases", "reason"})

    @classmethod
    def parse(cls, raw: bytes) -> SetAliases:
        obj = parse_object(raw, cls.FIELDS)
        aliases = obj.get("aliases")
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InvalidRequest("field 'aliases' must be a list of strings", param="aliases")
        if len(aliases) > MAX_ALIASES:
            raise InvalidRequest(f"at most {MAX_ALIASES} aliases", param="aliases")
        for alias in aliases:
            checked("aliases", validate_model, alias)
        return cls(aliases=tuple(dict.fromkeys(aliases)), reason=text(obj, "reason"))
