"""The mirror's bookkeeping, pure: what subscribers get, and the exactly-once revision rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from holdfast.store.types import Change, KeyValue, kv_from_change

KeyFilter = Callable[[str], bool]


@dataclass(frozen=True)
class MirrorUpdate:
    """What subscribers get. ``kvs`` is a read-only live view of the mirror's state: it is
    exact during the callback; copy it (``dict(update.kvs)``) to keep a snapshot. ``revision``
    is the mirror's (the newest applied in any range): it never goes down."""

    revision: int
    reset: bool  # True: ``kvs`` is a whole new state that replaces the old one atomically
    kvs: Mapping[str, KeyValue]
    changes: Sequence[Change]  # empty on reset


def build_state(
    kvs: Iterable[KeyValue], key_filter: KeyFilter | None = None
) -> dict[str, KeyValue]:
    return {kv.key: kv for kv in kvs if key_filter is None or key_filter(kv.key)}


def apply_batch(
    state: dict[str, KeyValue],
    last_revision: int,
    batch: Sequence[Change],
    key_filter: KeyFilter | None = None,
) -> tuple[int, list[Change]]:
    """Apply the changes of one etcd revision to ``state`` in place.

    Returns the new last revision and the changes that passed the filter. A batch at or below
    ``last_revision`` was applied already (a replay after a reconnect): it is ignored whole.
    """
    if not batch:
        return last_revision, []
    revision = batch[0].mod_revision
    if any(change.mod_revision != revision for change in batch):
        raise ValueError(f"a batch must hold one revision: {[c.mod_revision for c in batch]}")
    if revision <= last_revision:
        return last_revision, []
    kept = [c for c in batch if key_filter is None or key_filter(c.key)]
    for change in kept:
        if change.kind == "put":
            state[change.key] = kv_from_change(change)
        else:
            state.pop(change.key, None)
    return revision, kept
