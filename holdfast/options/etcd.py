"""The etcd TLS and auth command-line options both processes share (password: env only)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from holdfast.store.security import (
    ENV_ETCD_CA,
    ENV_ETCD_CERT,
    ENV_ETCD_KEY,
    ENV_ETCD_PASSWORD,
    ENV_ETCD_SERVER_NAME,
    ENV_ETCD_USER,
    EtcdSecurity,
    load_etcd_security,
)


def etcd_tls_options(p: argparse.ArgumentParser) -> None:
    for flag, help_text, env in (
        ("--etcd-ca", "CA bundle (PEM) for https:// etcd endpoints", ENV_ETCD_CA),
        ("--etcd-cert", "client certificate (PEM) for mutual TLS", ENV_ETCD_CERT),
        ("--etcd-key", "client key (PEM) for --etcd-cert", ENV_ETCD_KEY),
        ("--etcd-server-name", "TLS server name to expect from etcd", ENV_ETCD_SERVER_NAME),
        ("--etcd-user", f"etcd user; its password only in ${ENV_ETCD_PASSWORD}", ENV_ETCD_USER),
    ):
        p.add_argument(flag, default=None, help=f"{help_text} (${env})")


def etcd_security_from(args: argparse.Namespace, environ: Mapping[str, str]) -> EtcdSecurity:
    """SecurityError (a ValueError) names the bad setting."""
    return load_etcd_security(
        ca=args.etcd_ca,
        cert=args.etcd_cert,
        key=args.etcd_key,
        user=args.etcd_user,
        server_name=args.etcd_server_name,
        environ=environ,
    )
