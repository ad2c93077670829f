"""Creating a release: resolve the prompt versions it names, check its contracts, write it once.

Releases are immutable, so everything a release refers to is resolved and checked before the
create-only put; nothing it names can change under it afterwards.
"""

from __future__ import annotations

from configsvc import errors
from configsvc.http.payloads import NewRelease
from configsvc.prompts.ops import PromptOps
from configsvc.prompts.reads import active_of
from configsvc.releases.ops import ConfigService, Versioned
from holdfast.keyspace import RecordError, Release
from holdfast.keyspace.prompt import ACTIVE
from holdfast.logs import get_logger
from holdfast.store import CasConflict, Put

log = get_logger(__name__)


async def create_release(
    service: ConfigService, agent: str, req: NewRelease, actor: str
) -> Versioned[Release]:
    key = service.keyspace.release(agent, req.release)
    prompts: dict[str, str] = {}
    if req.prompts:
        prompts = await resolve_release_prompts(PromptOps(service), req.prompts)
    try:
        release = Release(
            agent=agent,
            name=req.release,
            model=req.model,
            base_url=req.base_url,
            api_key_env=req.api_key_env,
            provider=req.provider,
            created_at=service.clock(),
            created_by=actor,
            description=req.description,
            contracts=req.contracts,
            contract_policy=req.contract_policy,
            prompts=prompts,
        )
    except RecordError as exc:
        raise errors.InvalidRequest(str(exc)) from exc
    await _check_contracts(service, req.contracts)
    entry = service.audit_entry(
        actor, "release.create", key, req.reason, None, release.public(), agent
    )
    try:
        revision = await service._write(Put(key, release.encode(), expected_mod_revision=0), entry)
    except CasConflict as exc:
        raise errors.ReleaseExists(
            f"release exists; releases are immutable: {agent}/{req.release} was created "
            "already, create the new bundle under a new release name",
            param="release",
        ) from exc
    log.info(
        "release_created",
        agent=agent,
        release=req.release,
        model=req.model,
        revision=revision,
        actor=actor,
    )
    return Versioned(release, revision)


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


async def _check_contracts(service: ConfigService, contracts: dict[str, str]) -> None:
    """A release may name only registered contract versions (never deleted: check once)."""
    for tool, version in contracts.items():
        if await service._get(service.keyspace.contract(tool, version)) is None:
            raise errors.ContractNotFound(
                f"tool {tool!r} has no contract version {version!r}; see "
                f"`holdfastctl contract list {tool}`",
                param="contracts",
            )
