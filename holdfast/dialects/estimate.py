"""Prompt estimates the dialects share: UTF-8 bytes of JSON, and tokens of a model family's own
tokenizer where one ships with its data (no download at run time).

Budgets reserve a request's worst case, so an estimate must never be below what the provider
will count. Two are:

* ``bytes`` -- the UTF-8 size: a byte-level BPE tokenizer never makes a token of less than one
  byte, so the size of what the provider tokenizes bounds its count (about 4x above it for
  English);
* ``tokens`` -- for a model whose family's encoding is bundled with ``quicktok`` (OpenAI's
  ``o200k_base`` and ``cl100k_base``: gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4, gpt-4,
  gpt-3.5-turbo, text-embedding-3 and ada-002), the exact count of each text as the provider
  tokenizes it, plus the framing the provider adds (each dialect says how much). Text parts
  are counted; what is not text (images, audio, tool definitions whose rendering the provider
  does not document) is still counted in bytes. Other models, and every model while the
  encodings are not loaded, get ``bytes``.

Loading the encodings takes about half a second each and holds the interpreter (the tokenizer's
constructor does not release the GIL) and about 95 MB of memory for both, so nothing loads them
on the request path: a process that wants ``tokens`` calls ``preload`` before it serves (the
sidecar does, when ``--budget-prompt-estimator tokens`` is set).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, Protocol

from holdfast.logs import get_logger

log = get_logger(__name__)

_O200K: Final = re.compile(r"(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|o1|o3|o4)([-.:@].*)?")
_CL100K: Final = re.compile(
    r"(gpt-4|gpt-3\.5-turbo|text-embedding-3-small|text-embedding-3-large"
    r"|text-embedding-ada-002)([-:@].*)?"
)


class Encoding(Protocol):
    def count(self, text: str) -> int: ...


def json_bytes(value: object) -> int:
    """UTF-8 bytes of ``value``'s compact JSON (lone surrogates kept, as a provider reads them)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def encoding_for(model: str) -> str | None:
    """The bundled encoding of ``model``'s family (``openai/gpt-4o``, ``ft:gpt-4o-mini:...``
    included), or None."""
    name = model.lower().rsplit("/", 1)[-1].removeprefix("ft:")
    if _O200K.fullmatch(name):
        return "o200k_base"
    if _CL100K.fullmatch(name):
        return "cl100k_base"
    return None


ENCODINGS: Final = ("o200k_base", "cl100k_base")
_LOADED: dict[str, Encoding] = {}


def load_encoding(name: str) -> Encoding | None:
    """Load one bundled encoding now (blocking); None when it cannot be had."""
    if name in _LOADED:
        return _LOADED[name]
    try:
        import quicktok  # only a process that estimates in tokens needs it

        encoding: Encoding = quicktok.get_encoding(name)
    except Exception as exc:  # not installed, or its data unreadable: bytes it is
        log.warning("tokenizer_unavailable", encoding=name, error=str(exc)[:200])
        return None
    _LOADED[name] = encoding
    log.info("tokenizer_loaded", encoding=name)
    return encoding


def preload() -> list[str]:
    """Load every bundled encoding (before serving: it blocks); the names that loaded."""
    return [name for name in ENCODINGS if load_encoding(name) is not None]


def load(model: str) -> bool:
    """Load the tokenizer of ``model``'s family now (tests, benches); whether the ``tokens``
    estimator now counts that model's prompts with it."""
    name = encoding_for(model)
    return name is not None and load_encoding(name) is not None


def tokenizer(model: str) -> Encoding | None:
    """The tokenizer of ``model``'s family, when it was loaded; never loads on this path."""
    name = encoding_for(model)
    return _LOADED.get(name) if name is not None else None


def count(encoding: Encoding, text: str) -> int:
    """Tokens of ``text``; its UTF-8 size when the tokenizer cannot take it (lone surrogates)."""
    try:
        return encoding.count(text)
    except (TypeError, ValueError):
        return len(text.encode("utf-8", "surrogatepass"))


def content_tokens(encoding: Encoding, content: Any) -> int:
    """A message's content: text counted, other parts (images, audio, files) in bytes."""
    if isinstance(content, str):
        return count(encoding, content)
    if isinstance(content, list):
        total = 0
        for part in content:
            text = part.get("text") if isinstance(part, dict) else None
            if isinstance(text, str) and set(part) <= {"type", "text"}:
                total += count(encoding, text)
            else:
                total += json_bytes(part)
        return total
    return 0 if content is None else json_bytes(content)
