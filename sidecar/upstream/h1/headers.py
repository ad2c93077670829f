"""A response's header fields: case-insensitive lookup, names iterated as the provider wrote
them. For a field sent more than once, lookups give the first value (as aiohttp's do)."""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping
from typing import TypeVar, overload

T = TypeVar("T")


class Headers(Mapping[str, str]):
    __slots__ = ("_fields", "_lower")

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}  # name as sent -> first value
        self._lower: dict[str, str] = {}  # lower-case name -> first value

    def add(self, name: str, value: str) -> str:
        """Add one field as received; returns its lower-case name."""
        low = name.lower()
        self._fields.setdefault(name, value)
        self._lower.setdefault(low, value)
        return low

    def __getitem__(self, name: str) -> str:
        return self._lower[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, /, default: str) -> str: ...
    @overload
    def get(self, name: str, /, default: T) -> str | T: ...
    def get(self, name: str, /, default: object = None) -> object:
        return self._lower.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lower

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def items(self) -> ItemsView[str, str]:
        return self._fields.items()

    def __repr__(self) -> str:
        return f"Headers({sorted(self._lower)!r})"  # names only: values may echo secrets
