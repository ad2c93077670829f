"""Reading prompt versions from etcd: one prompt's versions, one version, every prompt, a diff.

Reads never change anything, so a failed one surfaces as StoreDown ("nothing was changed") and
an unreadable stored record as StoredRecordInvalid rather than a crash.
"""

from __future__ import annotations

from typing import Any

from configsvc import errors
from configsvc.prompts.gate import text_diff
from configsvc.releases import ConfigService, store_read
from holdfast.keyspace import RecordError
from holdfast.keyspace.prompt import ACTIVE, PromptVersion
from holdfast.store import KeyValue

Versions = dict[str, tuple[PromptVersion, int]]


def active_of(found: Versions) -> tuple[PromptVersion, int] | None:
    return next((pair for pair in found.values() if pair[0].status == "active"), None)


class PromptReads:
    """The read side of PromptOps, which adds the audited writes."""

    def __init__(self, service: ConfigService) -> None:
        self.service = service
        self.keyspace = service.keyspace

    async def versions(self, name: str) -> tuple[int, Versions]:
        revision, kvs = await store_read(
            self.service.store.list_prefix(self.keyspace.prompts_of(name))
        )
        found: Versions = {}
        for kv in kvs:
            prompt = _decode(kv)
            found[prompt.version] = (prompt, kv.mod_revision)
        return revision, found

    async def existing(self, name: str) -> Versions:
        _rev, found = await self.versions(name)
        if not found:
            raise errors.PromptNotFound(
                f"prompt {name!r} has no versions; create one with `holdfastctl prompt create`",
                param="name",
            )
        return found

    async def for_release(self, wanted: dict[str, str]) -> dict[str, str]:
        """A new release's prompts (``releases.create.PromptResolver``): "current" becomes the
        active version's number, "active" stays (the release follows the prompt), a number
        must exist."""
        out: dict[str, str] = {}
        for name, version in sorted(wanted.items()):
            found = await self.existing(name)
            if version == "current":
                active = active_of(found)
                if active is None:
                    raise errors.NoPreviousPrompt(
                        f"prompt {name!r} has no active version to take; name a version "
                        f"(--prompt {name}=N) or activate one first",
                        param="prompts",
                    )
                out[name] = active[0].version
            elif version == ACTIVE:
                if active_of(found) is None:
                    raise errors.NoPreviousPrompt(
                        f"prompt {name!r} has no active version yet; a release cannot follow it",
                        param="prompts",
                    )
                out[name] = ACTIVE
            elif version not in found:
                raise errors.PromptNotFound(
                    f"prompt {name!r} has no version {version}; see "
                    f"`holdfastctl prompt list {name}`",
                    param="prompts",
                )
            else:
                out[name] = version
        return out

    async def get(self, name: str, version: str) -> tuple[PromptVersion, int]:
        kv = await store_read(self.service.store.get(self.keyspace.prompt(name, version)))
        if kv is None:
            raise errors.PromptNotFound(f"prompt {name!r} has no version {version}")
        return _decode(kv), kv.mod_revision

    async def list_prompts(self) -> tuple[int, list[dict[str, Any]]]:
        revision, kvs = await store_read(
            self.service.store.list_prefix(self.keyspace.kind_prefix("prompts"))
        )
        by_name: dict[str, list[PromptVersion]] = {}
        for kv in kvs:
            prompt = _decode(kv)
            by_name.setdefault(prompt.name, []).append(prompt)
        out = []
        for name, found in sorted(by_name.items()):
            active = next((p.version for p in found if p.status == "active"), None)
            out.append(
                {
                    "name": name,
                    "versions": len(found),
                    "latest": max(int(p.version) for p in found),
                    "active": int(active) if active else None,
                }
            )
        return revision, out

    async def list_versions(self, name: str) -> list[dict[str, Any]]:
        found = await self.existing(name)
        ordered = sorted(found.values(), key=lambda pair: int(pair[0].version))
        return [{**p.summary(), "mod_revision": rev} for p, rev in ordered]

    async def diff(self, name: str, old: str, new: str) -> dict[str, Any]:
        (a, _), (b, _) = await self.get(name, old), await self.get(name, new)
        return text_diff(name, a, b)


def _decode(kv: KeyValue) -> PromptVersion:
    try:
        return PromptVersion.decode(kv.value)
    except RecordError as exc:
        raise errors.StoredRecordInvalid(f"stored record {kv.key} is unreadable: {exc}") from exc
