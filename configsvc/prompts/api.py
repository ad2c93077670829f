"""HTTP handlers of prompt versions, under ``/v1/prompts``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aiohttp import web

from configsvc import errors
from configsvc.http import actor_of, name, parse_object, read_body, read_document, reply, text
from configsvc.prompts.cases import parse_cases
from configsvc.prompts.eval import Evaluator
from configsvc.prompts.ops import Activation, PromptOps
from holdfast.keyspace import RecordError
from holdfast.keyspace.prompt import MAX_PROMPT_CHARS, validate_version

MAX_PROMPT_BODY_BYTES: Final = 2 << 20  # a case file (1 MiB) or a prompt, JSON-escaped
PROMPT_TOO_LARGE: Final = f"request body is larger than {MAX_PROMPT_BODY_BYTES} bytes"


async def read_large(request: web.Request) -> bytes:
    """The body of the prompt endpoints, which may exceed the API's general limit."""
    return await read_document(request, limit=MAX_PROMPT_BODY_BYTES, too_large=PROMPT_TOO_LARGE)


def _name(request: web.Request) -> str:
    return name(request.match_info["name"], what="prompt", param="name")


def version(value: str, *, param: str = "version") -> str:
    try:
        return validate_version(value)
    except RecordError as exc:
        raise errors.InvalidRequest(str(exc), param=param) from exc


def _flag(obj: Mapping[str, Any], key: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise errors.InvalidRequest(f"field {key!r} must be true or false", param=key)
    return value


@dataclass(frozen=True, slots=True)
class NewPrompt:
    text: str
    description: str
    reason: str
    FIELDS: ClassVar[frozenset[str]] = frozenset({"text", "description", "reason"})

    @classmethod
    def parse(cls, raw: bytes) -> NewPrompt:
        obj = parse_object(raw, cls.FIELDS)
        body = obj.get("text")
        if not isinstance(body, str) or not body.strip():
            raise errors.InvalidRequest("field 'text' must be a non-empty string", param="text")
        if len(body) > MAX_PROMPT_CHARS:
            raise errors.InvalidRequest(
                f"prompt text is over {MAX_PROMPT_CHARS} characters", param="text"
            )
        return cls(body, text(obj, "description"), text(obj, "reason"))


class PromptsApi:
    def __init__(self, ops: PromptOps, evaluator: Evaluator) -> None:
        self.ops = ops
        self.evaluator = evaluator

    async def list_prompts(self, request: web.Request) -> web.Response:
        revision, prompts = await self.ops.list_prompts()
        return reply({"revision": revision, "prompts": prompts, "gate": self.ops.gate})

    async def create(self, request: web.Request) -> web.Response:
        prompt_name, actor = _name(request), actor_of(request)
        req = NewPrompt.parse(await read_large(request))
        prompt, revision = await self.ops.create(
            prompt_name, req.text, description=req.description, reason=req.reason, actor=actor
        )
        return reply({"prompt": {**prompt.public(), "mod_revision": revision}}, status=201)

    async def list_versions(self, request: web.Request) -> web.Response:
        prompt_name = _name(request)
        versions = await self.ops.list_versions(prompt_name)
        return reply({"name": prompt_name, "versions": versions, "gate": self.ops.gate})

    async def show(self, request: web.Request) -> web.Response:
        prompt, revision = await self.ops.get(
            _name(request), version(request.match_info["version"])
        )
        return reply({"prompt": {**prompt.public(), "mod_revision": revision}})

    async def diff(self, request: web.Request) -> web.Response:
        query = request.query
        unknown = sorted(set(query) - {"from", "to"})
        if unknown:
            raise errors.InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}")
        old = version(query.get("from", ""), param="from")
        new = version(query.get("to", ""), param="to")
        return reply(await self.ops.diff(_name(request), old, new))

    async def evaluate(self, request: web.Request) -> web.Response:
        prompt_name, actor = _name(request), actor_of(request)
        wanted = version(request.match_info["version"])
        obj = parse_object(await read_large(request), frozenset({"agent", "release", "cases"}))
        agent = name(text(obj, "agent", required=True), what="agent", param="agent")
        release_name = name(text(obj, "release", required=True), what="release", param="release")
        cases = parse_cases(obj.get("cases"))
        prompt, _rev = await self.ops.get(prompt_name, wanted)
        release = (await self.ops.service.get_release(agent, release_name)).record
        evaluation = await self.evaluator.run(
            prompt, cases, release, actor=actor, now=self.ops.service.clock()
        )
        updated, revision = await self.ops.record_evaluation(prompt_name, wanted, evaluation, actor)
        return reply(
            {
                "prompt": {**updated.summary(), "mod_revision": revision},
                "evaluation": evaluation.to_map(),
                "gate": self.ops.gate,
                "min_cases": self.ops.min_cases,
                "passes_gate": self.ops.passes(evaluation),
            }
        )

    async def eval_limits(self, request: web.Request) -> web.Response:
        """How an evaluation of this version is bounded (the CLI sizes its wait from it)."""
        prompt, _rev = await self.ops.get(_name(request), version(request.match_info["version"]))
        return reply(
            {
                "prompt": prompt.summary(),
                "gate": self.ops.gate,
                "min_cases": self.ops.min_cases,
                "limits": self.evaluator.settings.public(),
            }
        )

    async def activate(self, request: web.Request) -> web.Response:
        prompt_name, actor = _name(request), actor_of(request)
        wanted = version(request.match_info["version"])
        obj = parse_object(await read_body(request), frozenset({"force", "reason"}), empty_ok=True)
        done = await self.ops.activate(
            prompt_name, wanted, actor=actor, reason=text(obj, "reason"), force=_flag(obj, "force")
        )
        return reply(self._activation(done))

    async def rollback(self, request: web.Request) -> web.Response:
        prompt_name, actor = _name(request), actor_of(request)
        obj = parse_object(await read_body(request), frozenset({"reason"}), empty_ok=True)
        done = await self.ops.rollback(prompt_name, actor=actor, reason=text(obj, "reason"))
        return reply(self._activation(done))

    def _activation(self, done: Activation) -> dict[str, Any]:
        ev = done.active.evaluation
        return {
            "name": done.active.name,
            "active": int(done.active.version),
            "deactivated": int(done.deactivated.version) if done.deactivated else None,
            "forced": done.forced,
            "gate_note": done.gate_note,
            "revision": done.revision,
            "gate": self.ops.gate,
            "min_cases": self.ops.min_cases,
            "evaluation": None
            if ev is None
            else {
                "agent": ev.agent,
                "release": ev.release,
                "model": ev.model,
                "passed": ev.passed,
                "total": ev.total,
                "pass_rate": round(ev.pass_rate, 6),
                "at": ev.at,
                "by": ev.by,
            },
        }

    def routes(self) -> list[web.RouteDef]:
        base = "/v1/prompts"
        return [
            web.get(base, self.list_prompts),
            web.post(f"{base}/{{name}}", self.create),
            web.get(f"{base}/{{name}}", self.list_versions),
            web.get(f"{base}/{{name}}/diff", self.diff),
            web.post(f"{base}/{{name}}/rollback", self.rollback),
            web.get(f"{base}/{{name}}/{{version}}", self.show),
            web.get(f"{base}/{{name}}/{{version}}/eval", self.eval_limits),
            web.post(f"{base}/{{name}}/{{version}}/eval", self.evaluate),
            web.post(f"{base}/{{name}}/{{version}}/activate", self.activate),
        ]
