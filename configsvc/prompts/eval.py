"""Run a prompt version's evaluation cases against a release's model.

The issue asked for cases to run "through a sidecar"; configsvc calls the release's provider
itself instead, exactly as the blue-green probe does (model, base URL, key variable of the
release; keys stay in configsvc's environment). A sidecar is one agent process's proxy on its
loopback: configsvc cannot reach one, may run where none exists, and evaluation traffic would
then count against that agent's budgets, health signals, shadow and experiments. What a sidecar
adds on the way (substituting the pinned prompt) is done here the same way: the version's
template rendered with the case's variables is the system message sent upstream.

Each case is one generation ``[system: the rendered prompt, user: the case input]`` (in the
release's provider kind's API, holdfast.providers) at
temperature 0, ``concurrency`` at a time, each within ``case_timeout`` and the whole run within
``EvalSettings.bound``. Checking an answer (RE2 regex, JSON Schema, similarity) runs in a worker
thread on a bounded excerpt, so a hostile case file cannot stall configsvc's event loop (and
with it the leader's rollout controller and lease keep-alive).

A case whose call fails (HTTP error, timeout, not a completion) counts as failed with the
reason; when every case fails that way the provider is the problem, not the prompt, and the
run is refused (``EvalFailed``) without recording anything; so is a run over its bound.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import aiohttp

from configsvc.errors import EvalFailed, InvalidCases
from configsvc.prompts.cases import Case, check, failed
from configsvc.prompts.settings import EvalSettings
from configsvc.releases import (
    answer_problem,
    connect_problem,
    provider_session,
    read_capped,
    scrub,
    url_refusal,
)
from holdfast import dialects
from holdfast.compare import AnswerError, answer_from_completion
from holdfast.keyspace import Release
from holdfast.keyspace.prompt import CaseResult, Evaluation, PromptVersion
from holdfast.logs import get_logger
from holdfast.net.guard import HostPolicy
from holdfast.prompts.template import TemplateError
from holdfast.providers import provider

log = get_logger(__name__)

MAX_ANSWER_TOKENS: Final = 1024


class Evaluator:
    def __init__(
        self,
        *,
        settings: EvalSettings | None = None,
        environ: Mapping[str, str] = os.environ,
        policy: HostPolicy | None = None,
    ) -> None:
        self.settings = settings if settings is not None else EvalSettings()
        self.timeout = self.settings.case_timeout
        self.concurrency = self.settings.concurrency
        self.environ = environ
        self.policy = policy if policy is not None else HostPolicy()
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        # allowlisted hosts only, no redirects (see configsvc.releases.probe)
        if self._http is None:
            self._http = provider_session(self.policy, self.timeout, "holdfast-configsvc-eval")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def run(
        self,
        prompt: PromptVersion,
        cases: Sequence[Case],
        release: Release,
        *,
        actor: str,
        now: float,
    ) -> Evaluation:
        rendered = []
        for case in cases:  # every case must fit the template before anything is sent
            try:
                rendered.append(prompt.template.render(case.vars))
            except TemplateError as exc:
                raise InvalidCases(f"case {case.id!r} does not fit {prompt.ref}: {exc}") from exc
        headers, key = self._headers(release)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(case: Case, system: str) -> CaseResult:
            async with gate:
                return await self._case(case, system, release, headers, key)

        bound = self.settings.bound(len(cases))
        try:
            async with asyncio.timeout(bound):
                results = await asyncio.gather(
                    *(one(c, s) for c, s in zip(cases, rendered, strict=True))
                )
        except TimeoutError:
            log.warning("prompt_eval_timed_out", prompt=prompt.ref, bound_s=bound)
            raise EvalFailed(
                f"the evaluation of {prompt.ref} did not finish within {bound:g}s ({len(cases)} "
                f"cases, {self.concurrency} at a time, {self.timeout:g}s each at most); nothing "
                "was recorded"
            ) from None
        errored = [r for r in results if r.error]
        if len(errored) == len(results):
            raise EvalFailed(
                f"the model of release {release.name!r} failed every case (first: "
                f"{errored[0].error}); nothing was recorded"
            )
        passed = sum(1 for r in results if r.passed)
        log.info(
            "prompt_evaluated",
            prompt=prompt.name,
            version=prompt.version,
            release=release.name,
            passed=passed,
            total=len(results),
            errors=len(errored),
        )
        return Evaluation(
            agent=release.agent,
            release=release.name,
            model=release.model,
            at=now,
            by=actor,
            passed=passed,
            total=len(results),
            cases=tuple(results),
        )

    def _headers(self, release: Release) -> tuple[dict[str, str], str]:
        """The provider kind's request headers, and the key in them (scrubbed from answers)."""
        key = ""
        if release.api_key_env:
            key = self.environ.get(release.api_key_env, "")
            if not key:
                raise EvalFailed(
                    f"${release.api_key_env} is not set in configsvc's environment, so release "
                    f"{release.name!r}'s provider cannot be called; nothing was recorded"
                )
        headers = {"Content-Type": "application/json"}
        headers.update(provider(release.provider).headers(key, release.api_version, {}))
        return headers, key

    async def _case(
        self, case: Case, system: str, release: Release, headers: dict[str, str], key: str
    ) -> CaseResult:
        if self._http is None:
            raise RuntimeError("Evaluator.start() was not called")
        kind = provider(release.provider)
        body: dict[str, Any] = kind.one_turn(
            release.model, system, case.input, MAX_ANSWER_TOKENS, temperature=0
        )
        url = release.base_url.rstrip("/") + kind.chat_path
        refusal = url_refusal(self.policy, url)
        if refusal:
            return failed(case, f"{url} refused by the upstream allowlist: {refusal}")
        try:
            async with self._http.post(
                url, json=body, headers=headers, allow_redirects=False
            ) as resp:
                raw = await read_capped(resp)
                status = resp.status
        except TimeoutError:
            return failed(case, f"no answer within {self.timeout:g}s")
        except aiohttp.ClientConnectorError as exc:
            return failed(case, connect_problem(url, exc))
        except aiohttp.ClientError as exc:
            # the class only: aiohttp's text may quote the provider's bytes (an echoed key)
            return failed(case, f"request failed: {type(exc).__name__}")
        problem = scrub(answer_problem(status, raw, kind.chat_dialect), key)
        if problem:
            return failed(case, problem)
        try:
            answer = answer_from_completion(raw, dialects.by_name(kind.chat_dialect))
        except AnswerError as exc:
            return failed(case, scrub(f"not a completion: {exc}", key))
        # Off the event loop: a slow check must not stall the leader's controllers.
        result = await asyncio.to_thread(check, case, answer.text)
        # The excerpt is stored in etcd: never with a key the provider echoed.
        return replace(result, answer=scrub(result.answer, key)) if key else result
