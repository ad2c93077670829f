"""Tool calls that arrive in fragments, assembled per (choice, index). Pure.

Streaming APIs send each call's id and name first and its arguments in fragments, keyed by a
position (OpenAI chat: the call's ``index`` within its choice). Providers may interleave the
fragments of parallel calls (index 0, 1, 0, 1...), so a call is complete only when its choice
ends or the stream ends -- never merely because another index started. A new id at a position
already in use (providers that number every call 0) does complete the earlier call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from holdfast.dialects.base import ToolCall

MAX_ARGUMENT_BYTES: Final = 1 << 20


@dataclass(slots=True)
class _Open:
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    size: int = 0
    truncated: bool = False


class CallAssembler:
    """Accumulates argument fragments per (choice, index); hands back each call once complete."""

    __slots__ = ("_max", "_open")

    def __init__(self, max_argument_bytes: int = MAX_ARGUMENT_BYTES) -> None:
        self._open: dict[tuple[int, int], _Open] = {}
        self._max = max_argument_bytes

    @property
    def open_names(self) -> list[str]:
        """The names of the calls still arriving ("" while a call's name has not come yet)."""
        return [call.name for call in self._open.values()]

    def fragment(
        self, choice: int, index: int, call_id: str, name: str, arguments: str
    ) -> list[ToolCall]:
        """One fragment of the call at (choice, index); returns a call it completed, if any."""
        done: list[ToolCall] = []
        entry = self._open.get((choice, index))
        if entry is not None and call_id and entry.id and call_id != entry.id:
            done.append(_whole(choice, index, self._open.pop((choice, index))))
            entry = None
        if entry is None:
            entry = self._open[(choice, index)] = _Open(id=call_id)
        elif call_id and not entry.id:
            entry.id = call_id
        if name:  # whole in the first fragment as a rule; joined if a provider splits it
            entry.name += name
        if arguments and not entry.truncated:
            entry.size += len(arguments)
            if entry.size > self._max:
                entry.truncated = True
                entry.parts.clear()
            else:
                entry.parts.append(arguments)
        return done

    def end_call(self, choice: int, index: int, arguments: str | None = None) -> list[ToolCall]:
        """The call at (choice, index) is complete (APIs that say so per call, e.g. OpenAI
        Responses). ``arguments``: the whole text when the API repeats it, used if no fragment
        came. [] when no such call is open."""
        entry = self._open.pop((choice, index), None)
        if entry is None:
            return []
        if arguments and not entry.parts and not entry.truncated:
            if len(arguments) > self._max:
                entry.truncated = True
            else:
                entry.parts.append(arguments)
        return [_whole(choice, index, entry)]

    def end_choice(self, choice: int) -> list[ToolCall]:
        """The choice finished: its calls are complete."""
        return self._close(lambda key: key[0] == choice)

    def finish(self) -> list[ToolCall]:
        """The stream ended: every call still open is complete."""
        return self._close(lambda key: True)

    def _close(self, which: Callable[[tuple[int, int]], bool]) -> list[ToolCall]:
        keys = sorted(k for k in self._open if which(k))
        return [_whole(key[0], key[1], self._open.pop(key)) for key in keys]


def _whole(choice: int, index: int, entry: _Open) -> ToolCall:
    return ToolCall(choice, index, entry.name, "".join(entry.parts), entry.truncated)
