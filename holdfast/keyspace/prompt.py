"""A prompt version: ``prompts/<name>/<version>``, its text immutable once created.

Versions are integers ``1``, ``2``, ... assigned by configsvc. Exactly one version of a prompt
is ``active`` at a time (what releases that follow the prompt's active version serve to new
sessions); the switch rewrites both version records in one etcd transaction. ``previous`` is
the version that was active when this one was activated: ``prompt rollback`` walks back to it.
The evaluation of the version against cases is stored on the record (``evaluation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Literal, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import MAX_TEXT, check_name
from holdfast.prompts.template import Template, TemplateError, parse

Status = Literal["draft", "active", "deprecated"]
STATUSES: Final[tuple[Status, ...]] = ("draft", "active", "deprecated")
MAX_PROMPT_CHARS: Final = 128 * 1024
MAX_CASES: Final = 200
MAX_EXCERPT: Final = 400
ACTIVE: Final = "active"  # a release's prompt version that follows the active one


def validate_version(value: str) -> str:
    if not value.isdigit() or value.startswith("0") or len(value) > 9:
        raise RecordError(f"invalid prompt version {value!r:.20}: use a positive integer")
    return value


def validate_release_prompts(prompts: dict[str, str]) -> dict[str, str]:
    """A release's ``{prompt: version | "active"}`` map."""
    if len(prompts) > 256:
        raise RecordError("a release names at most 256 prompts")
    for name, version in prompts.items():
        if not isinstance(name, str) or not isinstance(version, str):
            raise RecordError("release prompts must map names to version strings")
        check_name(name, what="prompt name")
        if version != ACTIVE:
            validate_version(version)
    return dict(sorted(prompts.items()))


def validate_pinned_prompts(prompts: Mapping[str, str]) -> dict[str, str]:
    """A pin's ``{prompt: concrete version}`` map."""
    checked = validate_release_prompts(dict(prompts))
    if ACTIVE in checked.values():
        raise RecordError("a pin records concrete prompt versions, never 'active'")
    return checked


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    case: str
    passed: bool
    checks: tuple[dict[str, Any], ...] = ()  # {"kind", "passed", "detail"}
    error: str = ""  # the model failed on this case (counts as not passed)
    answer: str = ""  # excerpt of the model's answer

    def to_map(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "passed": self.passed,
            "checks": list(self.checks),
            "error": self.error,
            "answer": self.answer[:MAX_EXCERPT],
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        return cls(
            case=fields.text(f, "case"),
            passed=fields.flag(f, "passed"),
            checks=tuple(fields.maps(f, "checks")),
            error=fields.text(f, "error", optional=True),
            answer=fields.text(f, "answer", optional=True),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Evaluation:
    """One run of a version against a case file, on one release's model."""

    agent: str
    release: str
    model: str
    at: float
    by: str
    passed: int
    total: int
    cases: tuple[CaseResult, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.passed <= self.total or self.total < 1:
            raise RecordError("evaluation counts must satisfy 0 <= passed <= total, total >= 1")
        if len(self.cases) > MAX_CASES:
            raise RecordError(f"an evaluation keeps at most {MAX_CASES} case results")

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total

    def to_map(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "release": self.release,
            "model": self.model,
            "at": self.at,
            "by": self.by,
            "passed": self.passed,
            "total": self.total,
            "pass_rate": round(self.pass_rate, 6),
            "cases": [c.to_map() for c in self.cases],
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        return cls(
            agent=fields.name(f, "agent"),
            release=fields.name(f, "release"),
            model=fields.text(f, "model"),
            at=fields.number(f, "at"),
            by=fields.text(f, "by", optional=True),
            passed=fields.integer(f, "passed"),
            total=fields.integer(f, "total"),
            cases=tuple(CaseResult.from_map(m) for m in fields.maps(f, "cases")),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PromptVersion:
    KIND: ClassVar[str] = "prompt"
    name: str
    version: str
    text: str
    status: Status = "draft"
    author: str = ""
    created_at: float = 0.0
    description: str = ""
    previous: str = ""  # the version active before this one was activated
    activated_at: float = 0.0
    activated_by: str = ""
    evaluation: Evaluation | None = None
    template: Template = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_name(self.name, what="prompt name")
        validate_version(self.version)
        if self.previous:
            validate_version(self.previous)
        if self.status not in STATUSES:
            raise RecordError(f"invalid prompt status {self.status!r:.30}")
        if not self.text.strip():
            raise RecordError("prompt text is empty")
        if len(self.text) > MAX_PROMPT_CHARS:
            raise RecordError(f"prompt text is over {MAX_PROMPT_CHARS} characters")
        if len(self.author) > MAX_TEXT or len(self.description) > MAX_TEXT:
            raise RecordError(f"author and description are limited to {MAX_TEXT} characters")
        try:
            object.__setattr__(self, "template", parse(self.text))
        except TemplateError as exc:
            raise RecordError(f"prompt {self.name}@{self.version}: {exc}") from exc

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def summary(self) -> dict[str, Any]:
        ev = self.evaluation
        return {
            "name": self.name,
            "version": int(self.version),
            "status": self.status,
            "author": self.author,
            "created_at": self.created_at,
            "description": self.description,
            "variables": list(self.template.variables),
            "previous": int(self.previous) if self.previous else None,
            "activated_at": self.activated_at or None,
            "activated_by": self.activated_by or None,
            "pass_rate": round(ev.pass_rate, 6) if ev else None,
            "evaluated_release": ev.release if ev else None,
        }

    def public(self) -> dict[str, Any]:
        ev = self.evaluation
        return {**self.summary(), "text": self.text, "evaluation": ev.to_map() if ev else None}

    def encode(self) -> bytes:
        ev = self.evaluation
        return encode_record(
            self.KIND,
            {
                "name": self.name,
                "version": self.version,
                "text": self.text,
                "status": self.status,
                "author": self.author,
                "created_at": self.created_at,
                "description": self.description,
                "previous": self.previous,
                "activated_at": self.activated_at,
                "activated_by": self.activated_by,
                "evaluation": ev.to_map() if ev else None,
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        text = f.get("text")
        if not isinstance(text, str):
            raise RecordError("field 'text' must be a string")
        ev = fields.submap(f, "evaluation")
        status = fields.text(f, "status")
        if status not in STATUSES:
            raise RecordError(f"invalid prompt status {status!r:.30}")
        return cls(
            name=fields.name(f, "name"),
            version=fields.text(f, "version"),
            text=text,
            status=status,
            author=fields.text(f, "author", optional=True),
            created_at=fields.optional_number(f, "created_at", 0.0),
            description=fields.text(f, "description", optional=True),
            previous=fields.text(f, "previous", optional=True),
            activated_at=fields.optional_number(f, "activated_at", 0.0),
            activated_by=fields.text(f, "activated_by", optional=True),
            evaluation=Evaluation.from_map(ev) if ev is not None else None,
        )


def decode_prompt(parts: tuple[str, ...], value: bytes) -> PromptVersion:
    """The sidecar's decoder for ``prompts/<name>/<version>``: the record must match its key."""
    prompt = PromptVersion.decode(value)
    if (prompt.name, prompt.version) != parts:
        raise RecordError(f"prompt record names {prompt.ref}, its key {'/'.join(parts)}")
    return prompt
