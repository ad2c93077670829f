"""The mirror's bookkeeping without etcd or an event loop: the exactly-once revision rule."""

from __future__ import annotations

import pytest

from holdfast.store import Change, KeyValue
from holdfast.store.mirror import apply_batch, build_state
from holdfast.store.types import kv_from_change


def put(key: str, value: bytes, revision: int, created: int = 0, version: int = 1) -> Change:
    return Change("put", key, value, revision, created or revision, version)


def test_apply_puts_and_deletes_one_revision() -> None:
    state = build_state([KeyValue("/a", b"1", 3, 3, 1), KeyValue("/b", b"2", 4, 4, 1)])
    revision, kept = apply_batch(
        state, 4, [put("/a", b"1b", 5, 3, 2), Change("delete", "/b", b"", 5)]
    )
    assert revision == 5
    assert [c.key for c in kept] == ["/a", "/b"]
    assert state == {"/a": KeyValue("/a", b"1b", 5, 3, 2)}


@pytest.mark.parametrize("revision", [3, 4])
def test_replayed_revisions_are_ignored_whole(revision: int) -> None:
    state = build_state([KeyValue("/a", b"1", 4, 4, 1)])
    before = dict(state)
    assert apply_batch(state, 4, [put("/a", b"old", revision), put("/z", b"z", revision)]) == (
        4,
        [],
    )
    assert state == before


def test_key_filter_drops_keys_but_advances_the_revision() -> None:
    def not_health(key: str) -> bool:
        return not key.startswith("/health/")

    state = build_state(
        [KeyValue("/health/x", b"h", 2, 2, 1), KeyValue("/a", b"1", 3, 3, 1)], not_health
    )
    assert set(state) == {"/a"}
    revision, kept = apply_batch(state, 3, [put("/health/x", b"h2", 4)], not_health)
    assert (revision, kept) == (4, [])
    assert set(state) == {"/a"}


def test_empty_and_mixed_batches() -> None:
    state: dict[str, KeyValue] = {}
    assert apply_batch(state, 7, []) == (7, [])
    with pytest.raises(ValueError, match="one revision"):
        apply_batch(state, 7, [put("/a", b"1", 8), put("/b", b"2", 9)])
    assert state == {}


def test_delete_of_unknown_key_and_kv_from_change() -> None:
    state: dict[str, KeyValue] = {}
    assert apply_batch(state, 1, [Change("delete", "/nope", b"", 2)])[0] == 2
    change = Change("put", "/k", b"v", 9, 5, 3, 77)
    assert kv_from_change(change) == KeyValue("/k", b"v", 9, 5, 3, 77)


def test_a_sequence_applies_exactly_once_in_order() -> None:
    state: dict[str, KeyValue] = {}
    last = 0
    history: list[int] = []
    batches = [
        [put("/a", b"1", 2)],
        [put("/b", b"2", 3)],
        [put("/a", b"1", 2)],
        [put("/c", b"3", 5)],
    ]
    for batch in batches + batches:  # a resume that replays everything
        new, kept = apply_batch(state, last, batch)
        if kept:
            history.append(new)
        last = new
    assert history == [2, 3, 5]
    assert sorted(state) == ["/a", "/b", "/c"]
