"""The store's exception tree; etcd client errors are translated into these at the boundary."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error the store raises."""


class StoreUnavailable(StoreError):
    """No endpoint answered in time (all endpoints were tried)."""


class PermissionDenied(StoreError):
    """etcd's auth refused the operation: this process's etcd user may not touch that key."""


class AuthFailed(StoreError):
    """etcd refused the credentials (unknown user or wrong password); retrying will not help."""


class CasConflict(StoreError):
    """A compare-and-swap lost: the key changed since it was read (or exists / is missing)."""

    def __init__(self, key: str, expected_mod_revision: int, actual_mod_revision: int) -> None:
        self.key = key
        self.expected_mod_revision = expected_mod_revision
        self.actual_mod_revision = actual_mod_revision
        super().__init__(
            f"{key} changed concurrently: expected mod_revision {expected_mod_revision}, "
            f"found {actual_mod_revision}"
        )


class LeaseNotFound(StoreError):
    """The lease named in a put or keepalive does not exist (it expired or was revoked)."""


class Compacted(StoreError):
    """The revision asked for was compacted away; the caller must re-list."""

    def __init__(self, compact_revision: int) -> None:
        self.compact_revision = compact_revision
        super().__init__(f"revision compacted; oldest available is {compact_revision}")
