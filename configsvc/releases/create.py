"""Creating a release: resolve the prompt versions it names, check its contracts, write it once.

Releases are immutable, so everything a release refers to is resolved and checked before the
create-only put; nothing it names can change under it afterwards.

Prompt versions are the prompts concern's (``configsvc.prompts``), which itself stores through
``ConfigService`` and evaluates against releases; so releases sit below prompts, and a new
release's prompts are resolved through the ``PromptResolver`` the server hands in.
"""

from __future__ import annotations

from typing import Protocol

from configsvc import errors
from configsvc.releases.ops import ConfigService, Versioned
from configsvc.releases.payloads import NewRelease
from holdfast.keyspace import RecordError, Release
from holdfast.logs import get_logger
from holdfast.store import CasConflict, Put

log = get_logger(__name__)


class PromptResolver(Protocol):
    async def for_release(self, wanted: dict[str, str]) -> dict[str, str]:
        """``{prompt: version}`` as a new release names them -> as it stores them (a number,
        or "active" to follow the prompt); an error naming the first that does not exist."""
        ...


async def create_release(
    service: ConfigService, agent: str, req: NewRelease, actor: str, prompts: PromptResolver
) -> Versioned[Release]:
    key = service.keyspace.release(agent, req.release)
    resolved: dict[str, str] = {}
    if req.prompts:
        resolved = await prompts.for_release(req.prompts)
    try:
        release = Release(
            agent=agent,
            name=req.release,
            model=req.model,
            base_url=req.base_url,
            api_key_env=req.api_key_env,
            provider=req.provider,
            api_version=req.api_version,
            created_at=service.clock(),
            created_by=actor,
            description=req.description,
            contracts=req.contracts,
            contract_policy=req.contract_policy,
            prompts=resolved,
            mcp=req.mcp,
            embedding_model=req.embedding_model,
            index_version=req.index_version,
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


async def _check_contracts(service: ConfigService, contracts: dict[str, str]) -> None:
    """A release may name only registered contract versions (never deleted: check once)."""
    for tool, version in contracts.items():
        if await service._get(service.keyspace.contract(tool, version)) is None:
            raise errors.ContractNotFound(
                f"tool {tool!r} has no contract version {version!r}; see "
                f"`holdfastctl contract list {tool}`",
                param="contracts",
            )
