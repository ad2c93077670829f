"""The OpenAI error shape every Holdfast API answers with; each package keeps its own table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    type: str
    code: str


INTERNAL: Final = ErrorSpec(500, "holdfast_error", "internal_error")


S = TypeVar("S")


def lookup(table: Mapping[Any, S], exc: Exception, default: S) -> S:
    """The most specific entry for ``exc``: its class, else its nearest base in the table."""
    for cls in type(exc).__mro__:
        spec = table.get(cls)
        if spec is not None:
            return spec
    return default


def error_body(message: str, spec: ErrorSpec, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": spec.type, "code": spec.code, "param": param}}
