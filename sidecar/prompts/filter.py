"""Prompt substitution on the request path, as an exchange filter.

An agent refers to a managed prompt in one of two ways (chat requests of any dialect):

* a system instruction whose whole text is ``@prompt:NAME`` -- replaced in place;
* the header ``X-Holdfast-Prompt: NAME`` -- a system instruction with the text is put first.

Variables come from the header ``X-Holdfast-Prompt-Vars`` (a JSON object) or the body field
``holdfast_prompt_vars`` (the same object; never sent upstream), not both. Every variable of
every referenced prompt must be given and every given variable must be used by one of them.
The version is the session's (see sidecar.prompt_index); a request without any reference is
not touched at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from holdfast.dialects import RequestRefused, RequestView
from holdfast.json_limits import JsonRefused, loads_bounded
from holdfast.keyspace.keys import NAME_RE
from holdfast.keyspace.prompt import PromptVersion
from holdfast.prompts.template import TemplateError, values_from
from sidecar.config import ConfigState
from sidecar.errors import PromptVariables
from sidecar.pins import PinTable
from sidecar.pipeline import Exchange, Observer
from sidecar.routing import index_of, session_prompt

PROMPT_HEADER: Final = "X-Holdfast-Prompt"
VARS_HEADER: Final = "X-Holdfast-Prompt-Vars"
VERSION_HEADER: Final = "X-Holdfast-Prompt-Version"
VARS_FIELD: Final = "holdfast_prompt_vars"
MARKER: Final = "@prompt:"
MAX_VARS_HEADER: Final = 16 * 1024


def _checked_name(name: str, where: str, param: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise PromptVariables(f"{where}: {name!r:.70} is not a prompt name", param=param)
    return name


def _insert(request: RequestView, text: str) -> None:
    try:
        request.insert_system(text)
    except RequestRefused as exc:
        raise PromptVariables(str(exc), param=exc.param) from exc


class PromptFilter:
    name = "prompts"

    def __init__(
        self,
        config: ConfigState,
        pins: PinTable,
        on_substituted: Callable[[str, str], None] | None = None,
    ) -> None:
        self.config = config
        self.pins = pins
        self.on_substituted = on_substituted

    def open(self, exchange: Exchange) -> Observer | None:
        body = exchange.body
        raw_vars = body.pop(VARS_FIELD, None)
        # A token count is of the prompt that will be sent: substituted the same way.
        if exchange.operation not in ("chat", "count_tokens"):
            return None
        header = exchange.headers.get(PROMPT_HEADER)
        request = exchange.request
        field = request.system_field
        refs = [
            (slot.position, _checked_name(slot.text[len(MARKER) :].strip(), slot.where, field))
            for slot in request.system_slots()
            if slot.text.startswith(MARKER)
        ]
        if header is None and not refs:
            if raw_vars is not None or exchange.headers.get(VARS_HEADER) is not None:
                raise PromptVariables(
                    "prompt variables were sent but no prompt is referenced "
                    f"(use {PROMPT_HEADER} or a system message '{MARKER}NAME')"
                )
            return None
        if header is not None and refs:
            raise PromptVariables(
                f"refer to a prompt either with {PROMPT_HEADER} or with a '{MARKER}NAME' system "
                "message, not both",
                param=field,
            )
        values = self._values(exchange, raw_vars)
        names = [_checked_name(header.strip(), PROMPT_HEADER, field)] if header is not None else []
        names += [n for _, n in refs]
        prompts = self._versions(exchange, names)
        texts = self._render(prompts, values)
        for i, ref in refs:
            request.set_system(i, texts[ref])
        if header is not None:
            _insert(request, texts[names[0]])
        used = ", ".join(prompts[n].ref for n in dict.fromkeys(names))
        exchange.response_headers[VERSION_HEADER] = used
        if self.on_substituted is not None:
            for n in dict.fromkeys(names):
                self.on_substituted(n, prompts[n].version)
        return None

    def _values(self, exchange: Exchange, raw_body: object) -> dict[str, str]:
        header = exchange.headers.get(VARS_HEADER)
        if header is not None and raw_body is not None:
            raise PromptVariables(f"send variables in {VARS_HEADER} or {VARS_FIELD}, not both")
        try:
            if header is not None:
                if len(header) > MAX_VARS_HEADER:
                    raise PromptVariables(f"{VARS_HEADER} is over {MAX_VARS_HEADER} bytes")
                try:
                    parsed = loads_bounded(header)
                except JsonRefused as exc:
                    raise PromptVariables(f"{VARS_HEADER} is not JSON: {exc}") from exc
                return values_from(parsed, what=VARS_HEADER)
            if raw_body is None:
                return {}
            return values_from(raw_body, what=VARS_FIELD)
        except TemplateError as exc:
            raise PromptVariables(str(exc), param=VARS_FIELD) from exc

    def _versions(self, exchange: Exchange, names: list[str]) -> dict[str, PromptVersion]:
        index = index_of(self.config.current)
        session = exchange.resolved.session
        entry = self.pins.get(session) if session is not None else None
        pinned = entry.pin.prompts if entry is not None else None
        release = exchange.resolved.release
        return {n: session_prompt(index, release, n, pinned) for n in dict.fromkeys(names)}

    @staticmethod
    def _render(prompts: dict[str, PromptVersion], values: dict[str, str]) -> dict[str, str]:
        wanted = {v for p in prompts.values() for v in p.template.variables}
        unknown = sorted(set(values) - wanted)
        if unknown:
            takes = ", ".join(sorted(wanted)) or "none"
            raise PromptVariables(
                f"unknown prompt variable(s): {', '.join(unknown)}; "
                f"{', '.join(p.ref for p in prompts.values())} take(s): {takes}"
            )
        out = {}
        for name, prompt in prompts.items():
            missing = [v for v in prompt.template.variables if v not in values]
            if missing:
                raise PromptVariables(
                    f"prompt {prompt.ref} needs variable(s): {', '.join(missing)}"
                )
            out[name] = prompt.template.fill(values)
        return out
