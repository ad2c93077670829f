"""Prompt versions in configsvc: create, record an evaluation, activate, roll back (the reads
are configsvc.prompts.reads).

Creating takes the next integer version with a create-only put (expected revision 0), so two
operators creating at once cannot take the same number. Activation and rollback rewrite the
two version records involved (new -> active, old -> deprecated) and the audit entry in ONE etcd
transaction guarded by both records' revisions: a reader never sees two active versions or
none, and an etcd failure leaves everything as it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Final

from configsvc import errors
from configsvc.prompts.gate import gate_problem
from configsvc.prompts.reads import PromptReads, active_of
from configsvc.prompts.settings import DEFAULT_MIN_CASES
from configsvc.releases import MAX_CAS_ATTEMPTS, ConfigService
from holdfast.keyspace import RecordError
from holdfast.keyspace.prompt import Evaluation, PromptVersion
from holdfast.logs import get_logger
from holdfast.store import CasConflict, Put

log = get_logger(__name__)

DEFAULT_GATE: Final = 0.8


@dataclass(frozen=True, slots=True)
class Activation:
    active: PromptVersion
    deactivated: PromptVersion | None
    revision: int
    forced: bool  # the gate was really overridden (not merely --force on a passing version)
    gate_note: str | None = None  # why the version did not pass, when forced


class PromptOps(PromptReads):
    def __init__(
        self,
        service: ConfigService,
        *,
        gate: float = DEFAULT_GATE,
        min_cases: int = DEFAULT_MIN_CASES,
    ) -> None:
        super().__init__(service)
        self.gate = gate
        self.min_cases = min_cases

    def passes(self, evaluation: Evaluation | None) -> bool:
        return self._problem(evaluation, "") is None

    # -- mutations -----------------------------------------------------------------------------

    async def create(
        self, name: str, text: str, *, description: str, reason: str, actor: str
    ) -> tuple[PromptVersion, int]:
        for attempt in range(MAX_CAS_ATTEMPTS):
            _rev, found = await self.versions(name)
            version = str(max((int(v) for v in found), default=0) + 1)
            try:
                prompt = PromptVersion(
                    name=name,
                    version=version,
                    text=text,
                    author=actor,
                    created_at=self.service.clock(),
                    description=description,
                )
            except RecordError as exc:
                raise errors.InvalidRequest(str(exc), param="text") from exc
            key = self.keyspace.prompt(name, version)
            entry = self.service.audit_entry(
                actor, "prompt.create", key, reason, None, prompt.summary()
            )
            try:
                revision = await self.service._write(
                    Put(key, prompt.encode(), expected_mod_revision=0), entry
                )
            except CasConflict:
                log.info("prompt_create_retry", prompt=name, version=version, attempt=attempt)
                continue
            log.info("prompt_created", prompt=name, version=version, revision=revision, actor=actor)
            return prompt, revision
        raise errors.RevisionConflict(
            f"versions of prompt {name!r} kept changing concurrently; nothing was written"
        )

    async def record_evaluation(
        self, name: str, version: str, evaluation: Evaluation, actor: str
    ) -> tuple[PromptVersion, int]:
        key = self.keyspace.prompt(name, version)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            prompt, mod_revision = await self.get(name, version)
            updated = _replace(prompt, evaluation=evaluation)
            entry = self.service.audit_entry(
                actor,
                "prompt.evaluate",
                key,
                "",
                {"pass_rate": prompt.summary()["pass_rate"]},
                {"pass_rate": round(evaluation.pass_rate, 6), "release": evaluation.release},
            )
            try:
                revision = await self.service._write(
                    Put(key, updated.encode(), expected_mod_revision=mod_revision), entry
                )
            except CasConflict:
                continue
            return updated, revision
        raise errors.RevisionConflict(f"prompt {name}@{version} kept changing; nothing written")

    async def activate(
        self, name: str, version: str, *, actor: str, reason: str, force: bool
    ) -> Activation:
        if force and not reason.strip():
            raise errors.InvalidRequest("--force needs a --reason (it is audited)", param="reason")
        for _attempt in range(MAX_CAS_ATTEMPTS):
            found = await self.existing(name)
            if version not in found:
                raise errors.PromptNotFound(f"prompt {name!r} has no version {version}")
            target, target_rev = found[version]
            current = active_of(found)
            if current is not None and current[0].version == version:
                return Activation(target, None, target_rev, forced=False)
            gate_note = self._gate(target, force)
            updated = _replace(
                target,
                status="active",
                previous=current[0].version if current else "",
                activated_at=self.service.clock(),
                activated_by=actor,
            )
            try:
                revision = await self._switch(
                    updated, target_rev, current, actor, "prompt.activate", reason,
                    {"forced": gate_note is not None, "gate": self.gate,
                     "min_cases": self.min_cases, "gate_note": gate_note,
                     "evaluated_release": _evaluated_on(target.evaluation)},
                )  # fmt: skip
            except CasConflict:
                continue
            log.info(
                "prompt_activated",
                prompt=name,
                version=version,
                previous=current[0].version if current else None,
                forced=gate_note is not None,
                actor=actor,
            )
            return Activation(
                updated,
                current[0] if current else None,
                revision,
                forced=gate_note is not None,
                gate_note=gate_note,
            )
        raise errors.RevisionConflict(f"prompt {name!r} kept changing; nothing was activated")

    async def rollback(self, name: str, *, actor: str, reason: str) -> Activation:
        for _attempt in range(MAX_CAS_ATTEMPTS):
            found = await self.existing(name)
            current = active_of(found)
            if current is None:
                raise errors.NoPreviousPrompt(f"prompt {name!r} has no active version to roll back")
            back = current[0].previous
            if not back or back not in found:
                raise errors.NoPreviousPrompt(
                    f"{current[0].ref} is the first version activated; there is nothing to roll "
                    "back to (activate another version instead)"
                )
            target, target_rev = found[back]
            updated = _replace(
                target, status="active", activated_at=self.service.clock(), activated_by=actor
            )
            try:
                revision = await self._switch(
                    updated, target_rev, current, actor, "prompt.rollback", reason, {}
                )
            except CasConflict:
                continue
            log.info("prompt_rolled_back", prompt=name, version=back, was=current[0].version)
            return Activation(updated, current[0], revision, forced=False)
        raise errors.RevisionConflict(f"prompt {name!r} kept changing; nothing was rolled back")

    # -- helpers -------------------------------------------------------------------------------

    def _problem(self, ev: Evaluation | None, ref: str) -> str | None:
        return gate_problem(ev, ref, gate=self.gate, min_cases=self.min_cases)

    def _gate(self, target: PromptVersion, force: bool) -> str | None:
        """None when the gate passes; the reason it did not when ``force`` overrides it."""
        problem = self._problem(target.evaluation, target.ref)
        if problem is None:
            return None
        if not force:
            raise errors.PromptGateFailed(
                f"{problem}; nothing was activated (use --force --reason to override, audited)"
            )
        return problem

    async def _switch(
        self,
        new: PromptVersion,
        new_rev: int,
        old: tuple[PromptVersion, int] | None,
        actor: str,
        action: str,
        reason: str,
        extra: dict[str, Any],
    ) -> int:
        """new -> active and old -> deprecated, with the audit entry, in one transaction."""
        puts = [Put(self.keyspace.prompt(new.name, new.version), new.encode(), new_rev)]
        before: dict[str, Any] = {"active": None}
        if old is not None:
            retired = _replace(old[0], status="deprecated")
            puts.append(
                Put(self.keyspace.prompt(old[0].name, old[0].version), retired.encode(), old[1])
            )
            before = {"active": int(old[0].version)}
        key = self.keyspace.prompts_of(new.name).rstrip("/")
        after = {"active": int(new.version)}
        entry = self.service.audit_entry(actor, action, key, reason, before, after, extra=extra)
        return await self.service.audit.write(puts, entry, check="`holdfastctl prompt list`")


def _evaluated_on(ev: Evaluation | None) -> str | None:
    return f"{ev.agent}/{ev.release}" if ev else None


def _replace(prompt: PromptVersion, **changes: Any) -> PromptVersion:
    return dataclasses.replace(prompt, **changes)
