"""A new release's prompt versions, resolved against the prompts that exist (configsvc)."""

from __future__ import annotations

from configsvc import errors
from configsvc.prompts import PromptOps, active_of
from holdfast.keyspace.prompt import ACTIVE


async def resolve_release_prompts(ops: PromptOps, wanted: dict[str, str]) -> dict[str, str]:
    """A new release's prompts: "current" becomes the active version's number, "active" stays
    (the release follows the prompt), a number must exist."""
    out: dict[str, str] = {}
    for name, version in sorted(wanted.items()):
        found = await ops.existing(name)
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
                f"prompt {name!r} has no version {version}; see `holdfastctl prompt list {name}`",
                param="prompts",
            )
        else:
            out[name] = version
    return out
