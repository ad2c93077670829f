"""The prompt versions a sidecar knows, indexed per config snapshot, and which version a
session gets (pure; the request path's lookups are dict reads).

A release names each prompt either by version (``"3"``: every session of the release gets
version 3) or as ``"active"``: a session gets the version that was active at its first turn,
recorded in its pin (``Pin.prompts``), so activating or rolling back a version changes what NEW
sessions get and never the prompt of a conversation already running. A prompt the pin does not
name yet (no version was active at the first turn, or a migration moved the session to a release
that follows more prompts) is recorded the first time the session is served once a version is
active (``unrecorded_prompts``). A session without an id (nothing to pin) gets the active
version of the moment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from holdfast.keyspace import Release
from holdfast.keyspace.prompt import ACTIVE, PromptVersion
from sidecar.config import ConfigSnapshot
from sidecar.errors import PromptNotInRelease, PromptUnavailable


@dataclass(frozen=True, slots=True)
class PromptIndex:
    versions: Mapping[str, Mapping[str, PromptVersion]]  # name -> version -> record
    active: Mapping[str, str]  # name -> active version

    @classmethod
    def build(cls, records: Mapping[str, object]) -> PromptIndex:
        versions: dict[str, dict[str, PromptVersion]] = {}
        active: dict[str, str] = {}
        for record in records.values():
            if not isinstance(record, PromptVersion):
                continue
            versions.setdefault(record.name, {})[record.version] = record
            # two "active" can only be seen mid-way through a torn read; the newer wins
            newer = int(record.version) > int(active.get(record.name, "0"))
            if record.status == "active" and newer:
                active[record.name] = record.version
        return cls(versions, active)


_EMPTY = PromptIndex({}, {})
_cache: list[tuple[ConfigSnapshot, PromptIndex]] = []


def index_of(snapshot: ConfigSnapshot | None) -> PromptIndex:
    """The index of ``snapshot``, built once per snapshot (snapshots are immutable)."""
    if snapshot is None:
        return _EMPTY
    if _cache and _cache[0][0] is snapshot:
        return _cache[0][1]
    index = PromptIndex.build(snapshot.of_kind("prompts"))
    _cache[:] = [(snapshot, index)]
    return index


def pinned_prompts(snapshot: ConfigSnapshot, release: Release) -> dict[str, str]:
    """What a new session's pin records: the active version of each prompt the release follows."""
    follows = [name for name, version in release.prompts.items() if version == ACTIVE]
    if not follows:
        return {}
    active = index_of(snapshot).active
    return {name: active[name] for name in follows if name in active}


def unrecorded_prompts(
    snapshot: ConfigSnapshot, release: Release, recorded: Mapping[str, str]
) -> dict[str, str]:
    """Prompts ``release`` takes as "active" that a pin does not name yet, at the version active
    now: what a session gets the first time it can use them, recorded in its pin from then on."""
    missing = [n for n, v in release.prompts.items() if v == ACTIVE and n not in recorded]
    if not missing:
        return {}
    active = index_of(snapshot).active
    return {name: active[name] for name in missing if name in active}


def session_prompt(
    index: PromptIndex,
    release: Release,
    name: str,
    pinned: Mapping[str, str] | None,
) -> PromptVersion:
    """The version of prompt ``name`` that serves this session, or an error to send back."""
    wanted = release.prompts.get(name)
    if wanted is None:
        named = ", ".join(sorted(release.prompts)) or "none"
        raise PromptNotInRelease(
            f"release {release.name!r} does not name prompt {name!r} (it names: {named}); "
            f"create a release with `--prompt {name}` or send the prompt text yourself",
            param="messages",
        )
    if wanted == ACTIVE:
        version = (pinned or {}).get(name) or index.active.get(name)
        if version is None:
            raise PromptUnavailable(
                f"prompt {name!r} has no active version that this sidecar knows; see /status"
            )
    else:
        version = wanted
    record = index.versions.get(name, {}).get(version)
    if record is None:
        raise PromptUnavailable(
            f"release {release.name!r} uses prompt {name}@{version}, which this sidecar has not "
            "received (missing or rejected record); see /status"
        )
    return record
