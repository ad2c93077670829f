"""Small readers shared by the API modules: typed field access that refuses what is not there
in the shape the API requires. Pure."""

from __future__ import annotations

import json
from typing import Any

from holdfast.translate.neutral import Untranslatable


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def as_list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def text(value: object) -> str:
    return value if isinstance(value, str) else ""


def number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Untranslatable(f"{name!r} must be a number", name)
    return float(value)


def stops(value: object, param: str) -> list[str]:
    """A stop sequence or a list of them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return list(value)
    raise Untranslatable(f"{param!r} must be a string or a list of strings", param)


def object_arguments(arguments: str, where: str) -> dict[str, Any]:
    """A tool call's arguments as the JSON object an API that carries them as objects needs."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise Untranslatable(
            f"{where}: the tool call's arguments are not a JSON object, and the provider's API "
            "carries a call's input only as an object",
            where,
        )
    return value


def image_source(url: str, where: str) -> dict[str, Any]:
    """An Anthropic image source from an OpenAI image URL (an https URL or a data URL)."""
    if url.startswith("data:"):
        head, sep, data = url[5:].partition(",")
        media_type, _, encoding = head.partition(";")
        if not sep or encoding != "base64" or not media_type.startswith("image/"):
            raise Untranslatable(
                f"{where}: an image data URL must be data:image/...;base64,...", where
            )
        return {"type": "base64", "media_type": media_type, "data": data}
    if url.startswith(("https://", "http://")):
        return {"type": "url", "url": url}
    raise Untranslatable(f"{where}: an image must be an http(s) URL or a data URL", where)
