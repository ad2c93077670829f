"""What a failed etcd gRPC call means for the store: retry, re-authenticate, or a store error.

Needs only ``grpc``, so the one module that imports aetcd (``holdfast.store.etcd``) stays small.
"""

from __future__ import annotations

from typing import Final

import grpc

from holdfast.store.errors import LeaseNotFound, PermissionDenied, StoreError, StoreUnavailable

# INTERNAL is what gRPC reports for a connection reset mid-call, not only etcd's own failures.
RETRYABLE: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)
# What etcd answers for a token it no longer knows (expired, or issued by a restarted member) and
# for one issued before the auth store changed: both mean "authenticate again", as clientv3 does.
STALE_TOKEN: Final = ("invalid auth token", "revision of auth store is old", "user name is empty")


def detail(exc: BaseException) -> str:
    """A short description of a failed call for messages and logs: status code and details."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"


def translate(exc: BaseException, what: str) -> StoreError:
    """The store error for a failed call; ``what`` names the operation in the message."""
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    message = f"{what}: {detail(exc)}"
    if code is None or code in RETRYABLE or code == grpc.StatusCode.CANCELLED:
        return StoreUnavailable(message)
    if code == grpc.StatusCode.NOT_FOUND and "lease" in message:
        return LeaseNotFound(message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(
            f"{message} (the etcd user's roles do not grant this key range; see the role layout: "
            "holdfastctl etcd-roles)"
        )
    return StoreError(message)


def is_stale_token(exc: BaseException) -> bool:
    """True when etcd refused the call's auth token before doing anything with it."""
    if not isinstance(exc, grpc.aio.AioRpcError):
        return False
    details = exc.details() or ""
    return any(marker in details for marker in STALE_TOKEN)
