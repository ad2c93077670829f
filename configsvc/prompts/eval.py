"""Run a prompt version's evaluation cases against a release's model.

The issue asked for cases to run "through a sidecar"; configsvc calls the release's provider
itself instead, exactly as the blue-green probe does (model, base URL, key variable of the
release; keys stay in configsvc's environment). A sidecar is one agent process's proxy on its
loopback: configsvc cannot reach one, may run where none exists, and evaluation traffic would
then count against that agent's budgets, health signals, shadow and experiments. What a sidecar
adds on the way (substituting the pinned prompt) is done here the same way: the version's
template rendered with the case's variables is the system message sent upstream.

Each case is one chat completion ``[system: the rendered prompt, user: the case input]`` at
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
from holdfast.compare import AnswerError, answer_from_completion
from holdfast.keyspace import Release
from holdfast.keyspace.prompt import CaseResult, Evaluation, PromptVersion
from holdfast.logs import get_logger
from holdfast.net.guard import HostPolicy
from holdfast.prompts.template import TemplateError

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
        headers = self._headers(release)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(case: Case, system: str) -> CaseResult:
            async with gate:
                return await self._case(case, system, release, headers)

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

    def _headers(self, release: Release) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if release.api_key_env:
            key = self.environ.get(release.api_key_env, "")
            if not key:
                raise EvalFailed(
                    f"${release.api_key_env} is not set in configsvc's environment, so release "
                    f"{release.name!r}'s provider cannot be called; nothing was recorded"
                )
            headers["Authorization"] = f"Bearer {key}"
        return headers

    async def _case(
        self, case: Case, system: str, release: Release, headers: dict[str, str]
    ) -> CaseResult:
        if self._http is None:
            raise RuntimeError("Evaluator.start() was not called")
        body: dict[str, Any] = {
            "model": release.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": case.input},
            ],
            "temperature": 0,
            "max_tokens": MAX_ANSWER_TOKENS,
            "stream": False,
        }
        url = release.base_url.rstrip("/") + "/chat/completions"
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
        key = _bearer(headers)
        problem = scrub(answer_problem(status, raw), key)
        if problem:
            return failed(case, problem)
        try:
            answer = answer_from_completion(raw)
        except AnswerError as exc:
            return failed(case, scrub(f"not a completion: {exc}", key))
        # Off the event loop: a slow check must not stall the leader's controllers.
        result = await asyncio.to_thread(check, case, answer.text)
        # The excerpt is stored in etcd: never with a key the provider echoed.
        return replace(result, answer=scrub(result.answer, key)) if key else result


def _bearer(headers: dict[str, str]) -> str:
    return headers.get("Authorization", "").removeprefix("Bearer ")
