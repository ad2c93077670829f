"""Provider APIs the sidecar speaks, one module each behind one seam (holdfast.dialects.base).

Adding a dialect is a new module that defines a ``Dialect`` and one line in ``DIALECTS`` below;
the sidecar serves every registered dialect's paths through the same filter chain.
"""

from __future__ import annotations

from typing import Final

from holdfast.dialects import anthropic_messages, openai_chat, openai_embeddings, openai_responses
from holdfast.dialects.base import (
    NO_EVENT,
    Answer,
    DeclaredTool,
    Dialect,
    ErrorKind,
    Estimator,
    EventView,
    RequestRefused,
    RequestView,
    StateFetch,
    StatefulDialect,
    StatefulRequest,
    StateGone,
    StateKind,
    StateRef,
    StreamDecoder,
    SystemSlot,
    ToolCall,
    Usage,
    stateful,
)

DIALECTS: Final[tuple[Dialect, ...]] = (
    openai_chat.DIALECT,
    openai_embeddings.DIALECT,
    openai_responses.DIALECT,
    anthropic_messages.DIALECT,
    anthropic_messages.COUNT_DIALECT,
)
DEFAULT: Final[Dialect] = openai_chat.DIALECT  # the error shape of endpoints of no dialect


def by_name(name: str) -> Dialect:
    for dialect in DIALECTS:
        if dialect.name == name:
            return dialect
    raise KeyError(name)


__all__ = [
    "DEFAULT",
    "DIALECTS",
    "NO_EVENT",
    "Answer",
    "DeclaredTool",
    "Dialect",
    "ErrorKind",
    "Estimator",
    "EventView",
    "RequestRefused",
    "RequestView",
    "StateFetch",
    "StateGone",
    "StateKind",
    "StateRef",
    "StatefulDialect",
    "StatefulRequest",
    "StreamDecoder",
    "SystemSlot",
    "ToolCall",
    "Usage",
    "by_name",
    "stateful",
]
