"""How a process proves itself to etcd: TLS material and etcd's own user/password auth.

Pure settings, shared by the sidecar and configsvc; ``holdfast.store.grpc_channel`` turns them into
gRPC credentials and ``holdfast.store.etcd`` into auth tokens. The password is read from the
environment only (a flag would show in ``ps``) and never appears in ``repr`` or in any error
message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

ENV_ETCD_CA: Final = "HOLDFAST_ETCD_CA"
ENV_ETCD_CERT: Final = "HOLDFAST_ETCD_CERT"
ENV_ETCD_KEY: Final = "HOLDFAST_ETCD_KEY"
ENV_ETCD_SERVER_NAME: Final = "HOLDFAST_ETCD_SERVER_NAME"
ENV_ETCD_USER: Final = "HOLDFAST_ETCD_USER"
ENV_ETCD_PASSWORD: Final = "HOLDFAST_ETCD_PASSWORD"  # noqa: S105 - a variable name
MAX_PEM_BYTES: Final = 1 << 20
MAX_USER_CHARS: Final = 128


class SecurityError(ValueError):
    """TLS files or credentials that cannot be used; the message names the setting."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EtcdSecurity:
    """TLS files (PEM) and etcd credentials. All empty: plain, unauthenticated etcd."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str = ""
    user: str = ""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise SecurityError("--etcd-cert and --etcd-key go together (mutual TLS needs both)")
        if self.user and not self.password:
            raise SecurityError(
                f"--etcd-user {self.user!r} needs its password in ${ENV_ETCD_PASSWORD}"
            )
        if self.password and not self.user:
            raise SecurityError(f"${ENV_ETCD_PASSWORD} is set but --etcd-user is not")
        if len(self.user) > MAX_USER_CHARS or any(c.isspace() or c == ":" for c in self.user):
            raise SecurityError("--etcd-user must be up to 128 characters, no spaces or ':'")
        if self.server_name and any(c.isspace() or c == "/" for c in self.server_name):
            raise SecurityError(f"--etcd-server-name {self.server_name!r} is not a host name")

    @property
    def tls_files(self) -> bool:
        return self.ca_file is not None or self.cert_file is not None

    @property
    def auth(self) -> bool:
        return bool(self.user)

    def check_endpoints(self, endpoints: tuple[str, ...]) -> None:
        """The scheme of the endpoints must fit the TLS settings (one scheme for all)."""
        schemes = {e.strip().partition("://")[0] for e in endpoints}
        if len(schemes) > 1:
            raise SecurityError("etcd endpoints mix http:// and https://; use one scheme for all")
        if self.tls_files and schemes != {"https"}:
            raise SecurityError("--etcd-ca/--etcd-cert/--etcd-key need https:// etcd endpoints")

    def read_pem(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(CA bundle, client key, client cert chain) as bytes; SecurityError if unreadable."""
        return (_read(self.ca_file, "--etcd-ca"), _read(self.key_file, "--etcd-key"),
                _read(self.cert_file, "--etcd-cert"))  # fmt: skip

    def check_files(self) -> None:
        """Fail at start, not on the first connection, when a file is missing or unreadable."""
        self.read_pem()

    def describe(self) -> str:
        """For logs: what is configured, never the password."""
        tls = "mtls" if self.cert_file else ("tls" if self.ca_file else "system-roots")
        return f"{tls},user={self.user or '-'}"


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise SecurityError(f"{flag} {path}: cannot read it ({exc.strerror or exc})") from exc
    if len(data) > MAX_PEM_BYTES:
        raise SecurityError(f"{flag} {path}: larger than {MAX_PEM_BYTES} bytes; not a PEM file")
    if b"-----BEGIN " not in data:
        raise SecurityError(f"{flag} {path}: not a PEM file (no -----BEGIN line)")
    return data


def load_etcd_security(
    *,
    ca: str | None,
    cert: str | None,
    key: str | None,
    user: str | None,
    server_name: str | None,
    environ: Mapping[str, str] = os.environ,
) -> EtcdSecurity:
    """Flags win over ``HOLDFAST_ETCD_*``; the password only ever comes from the environment.

    Files are checked for readability here, so a bad path stops the process at start.
    """

    def pick(flag: str | None, env: str) -> str:
        return (flag if flag is not None else environ.get(env, "")).strip()

    def path(flag: str | None, env: str) -> Path | None:
        value = pick(flag, env)
        return Path(value) if value else None

    security = EtcdSecurity(
        ca_file=path(ca, ENV_ETCD_CA),
        cert_file=path(cert, ENV_ETCD_CERT),
        key_file=path(key, ENV_ETCD_KEY),
        server_name=pick(server_name, ENV_ETCD_SERVER_NAME),
        user=pick(user, ENV_ETCD_USER),
        password=environ.get(ENV_ETCD_PASSWORD, ""),
    )
    security.check_files()
    return security
