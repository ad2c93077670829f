"""Parsing and validation of request bodies and query strings: pure functions, no I/O.

Each body is a JSON object with a fixed set of fields; unknown fields are refused by name so
that a typo (``"relase"``) is an error instead of a silently ignored value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from configsvc.errors import InvalidRequest
from configsvc.limits import MAX_HISTORY_LIMIT
from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded
from holdfast.keyspace import RecordError, validate_name
from holdfast.keyspace.fields import MAX_TEXT
from holdfast.keyspace.prompt import validate_release_prompts
from holdfast.keyspace.records import (
    validate_base_url,
    validate_contracts,
    validate_env_var,
    validate_model,
)

MAX_ALIASES: Final = 64
DEFAULT_HISTORY_LIMIT: Final = 50
MAX_JSON_DEPTH: Final = DEFAULT_MAX_JSON_DEPTH  # request bodies are at most 64 KiB anyway


def bounded_json(raw: bytes | str, *, what: str, param: str | None = None) -> Any:
    """JSON from a client: nesting at most MAX_JSON_DEPTH deep, no NaN, no huge ints, no lone
    surrogates (they cannot be stored), else InvalidRequest naming ``what``."""
    try:
        value = loads_bounded(raw, MAX_JSON_DEPTH)
    except JsonRefused as exc:
        raise InvalidRequest(f"{what} refused: {exc}", param=param) from exc
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"{what} refused: a string holds a lone UTF-16 surrogate", param=param
        ) from exc
    return value


def parse_object(raw: bytes, allowed: frozenset[str], *, empty_ok: bool = False) -> dict[str, Any]:
    """Decode ``raw`` as one JSON object whose keys are all in ``allowed``."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise InvalidRequest("request body must be a JSON object")
    obj = bounded_json(raw, what="request body")
    if not isinstance(obj, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            param=unknown[0],
        )
    return obj


def text(obj: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"field {name!r} is required", param=name)
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"field {name!r} must be a string", param=name)
    if required and not value:
        raise InvalidRequest(f"field {name!r} must not be empty", param=name)
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"field {name!r} is longer than {MAX_TEXT} characters", param=name)
    return value


def name(value: str, *, what: str, param: str) -> str:
    try:
        return validate_name(value, what=what)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from exc


def _checked(param: str, check: Any, value: str) -> str:
    try:
        result: str = check(value)
    except RecordError as exc:
        raise InvalidRequest(str(exc), param=param) from exc
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRelease:
    release: str
    model: str
    base_url: str
    api_key_env: str = ""
    provider: str = "openai"
    description: str = ""
    reason: str = ""
    contracts: dict[str, str] = field(default_factory=dict)  # tool -> contract version
    contract_policy: str = ""
    prompts: dict[str, str] = field(default_factory=dict)  # name -> N | "active" | "current"

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"release", "model", "base_url", "api_key_env", "provider", "description", "reason"}
        | {"contracts", "contract_policy", "prompts"}
    )

    @classmethod
    def parse(cls, raw: bytes) -> NewRelease:
        obj = parse_object(raw, cls.FIELDS)
        provider = text(obj, "provider") or "openai"
        if provider != "openai":
            raise InvalidRequest(
                f"unsupported provider {provider!r:.40}; supported: openai", param="provider"
            )
        return cls(
            release=name(text(obj, "release", required=True), what="release", param="release"),
            model=_checked("model", validate_model, text(obj, "model", required=True)),
            base_url=_checked("base_url", validate_base_url, text(obj, "base_url", required=True)),
            api_key_env=_checked("api_key_env", validate_env_var, text(obj, "api_key_env")),
            provider=provider,
            description=text(obj, "description"),
            reason=text(obj, "reason"),
            **_release_contracts(obj),
            prompts=release_prompts(obj.get("prompts")),
        )


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

    FIELDS: ClassVar[frozenset[str]] = frozenset({"release", "reason", "if_revision"})

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
        )


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
            _checked("aliases", validate_model, alias)
        return cls(aliases=tuple(dict.fromkeys(aliases)), reason=text(obj, "reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryQuery:
    agent: str = ""
    limit: int = DEFAULT_HISTORY_LIMIT

    FIELDS: ClassVar[frozenset[str]] = frozenset({"agent", "limit"})

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> HistoryQuery:
        unknown = sorted(set(query) - cls.FIELDS)
        if unknown:
            raise InvalidRequest(
                f"unknown query parameter(s): {', '.join(unknown)}", param=unknown[0]
            )
        agent = query.get("agent", "")
        raw_limit = query.get("limit", "") or str(DEFAULT_HISTORY_LIMIT)
        try:
            limit = int(raw_limit)
        except ValueError as exc:
            raise InvalidRequest("limit must be an integer", param="limit") from exc
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_HISTORY_LIMIT}", param="limit")
        return cls(agent=name(agent, what="agent", param="agent") if agent else "", limit=limit)
