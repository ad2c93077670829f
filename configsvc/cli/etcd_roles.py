"""``holdfastctl etcd-roles ENV AGENT...``: print (or ``--apply``) Holdfast's etcd role layout.

Printing needs nothing but the names: it writes an etcdctl script a person can read and paste
(etcdctl prompts for each new user's password). ``--apply`` runs the same steps through etcdctl,
reading the new users' passwords from a JSON file ``{"user": "password"}`` (mode 0600, never a
flag) and connecting with ``--etcd`` and the ``--etcd-*`` TLS/auth options of the other commands.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from typing import Any, Final

from configsvc.cli.commands import Leaf
from holdfast.names import validate_name
from holdfast.options.common import DEFAULT_ETCD, ENV_ETCD, parse_endpoints
from holdfast.options.etcd import etcd_security_from, etcd_tls_options

PROG: Final = "holdfastctl etcd-roles"
MAX_PASSWORDS_BYTES: Final = 64 * 1024


def register_etcd_roles(nouns: Any, leaf: Leaf) -> None:
    sp = leaf(nouns, "etcd-roles", None, "print or apply the etcd users and roles of an env")
    sp.add_argument("env", help="environment, e.g. prod")
    sp.add_argument("agents", nargs="*", metavar="AGENT", help="one sidecar role per agent")
    sp.add_argument("--apply", action="store_true", help="run the steps through etcdctl")
    sp.add_argument("--no-users", action="store_true", help="roles and grants only")
    sp.add_argument(
        "--enable-auth", action="store_true", help="also add root and run `auth enable` (once)"
    )
    sp.add_argument("--passwords-file", default=None, help='--apply: JSON {"user": "password"}')
    sp.add_argument("--etcd", default=None, help=f"--apply: endpoints (${ENV_ETCD})")
    sp.add_argument("--etcdctl", default="etcdctl", help="etcdctl binary (default on PATH)")
    etcd_tls_options(sp)


def _passwords(path: str | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            data = handle.read(MAX_PASSWORDS_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"--passwords-file {path}: cannot read it ({exc.strerror})") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"--passwords-file {path}: readable by others; chmod 600 it")
    if len(data) > MAX_PASSWORDS_BYTES:
        raise ValueError(f"--passwords-file {path}: too large")
    try:
        obj = json.loads(data)
    except ValueError:
        raise ValueError(f"--passwords-file {path}: not JSON") from None
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in obj.items()
    ):
        raise ValueError(f'--passwords-file {path}: expected {{"user": "password"}} strings')
    return dict(obj)


def etcd_roles_main(args: argparse.Namespace) -> int:
    # the role layout builds keys: the records load only for this command
    from holdfast.etcdauth import roles as etcd_roles
    from holdfast.etcdauth.etcdctl import EtcdctlError, EtcdctlTarget, apply

    try:
        validate_name(args.env, what="environment")
        for agent in args.agents:
            validate_name(agent, what="agent")
        if not args.apply:
            users, enable = not args.no_users, args.enable_auth
            sys.stdout.write(etcd_roles.script(args.env, args.agents, users=users, enable=enable))
            return 0
        passwords = _passwords(args.passwords_file)
        endpoints = parse_endpoints(args.etcd or os.environ.get(ENV_ETCD, "") or DEFAULT_ETCD)
        security = etcd_security_from(args, os.environ)
        security.check_endpoints(endpoints)
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    steps = etcd_roles.steps(
        args.env, args.agents, users=not args.no_users, enable=args.enable_auth
    )
    target = EtcdctlTarget(endpoints=endpoints, security=security, binary=args.etcdctl)
    try:
        for line in apply(steps, passwords, target):
            print(line)
    except EtcdctlError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    print(f"{PROG}: layout of {args.env!r} applied ({len(steps)} steps)")
    return 0
