"""The etcd role layout of one Holdfast environment, as ``etcdctl`` steps (pure; no I/O).

Every role may read the single key ``/holdfast/`` (empty): the store's liveness probe reads it.

* ``holdfast-<env>-configsvc`` (role and user): readwrite on ``/holdfast/<env>/`` — configsvc
  does every write of configuration, audit and elections.
* ``holdfast-<env>-sidecar-<agent>`` (role and user), one per agent: read on
  ``/holdfast/<env>/`` (config, watches), readwrite on its own agent's ``pins/<agent>/`` and
  ``responses/<agent>/`` (which release issued each response id) and, because its sidecars' ids
  start with ``<agent>.``, on ``health/<agent>.``, ``spend/<agent>.`` (fleet budget reports,
  ``spend/<holder>/<scope>``) and ``outcomes/<agent>.`` (experiment outcomes,
  ``outcomes/<sidecar-id>/<experiment>``). configsvc checks that a spend or outcome
  record names the holder of its key, so a sidecar cannot report in another's name.

etcd grants permissions per key range, so "only its own health key" is per agent, not per
sidecar process: every sidecar of an agent shares the agent's user. A per-sidecar user would pin
each key exactly but needs a user provisioned for every process start.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Final, Literal

from holdfast.keyspace import Keyspace, validate_name
from holdfast.store.types import PROBE_KEY

ROOT: Final = "root"  # etcd refuses `auth enable` unless a root user with the root role exists


@dataclass(frozen=True, slots=True)
class Grant:
    role: str
    access: Literal["read", "write", "readwrite"]
    prefix: str
    exact: bool = False  # one key rather than a prefix


@dataclass(frozen=True, slots=True)
class Principal:
    """An etcd user and its role of the same name."""

    name: str
    grants: tuple[Grant, ...]


def configsvc_user(env: str) -> str:
    return f"holdfast-{validate_name(env, what='environment')}-configsvc"


def sidecar_user(env: str, agent: str) -> str:
    env = validate_name(env, what="environment")
    return f"holdfast-{env}-sidecar-{validate_name(agent, what='agent')}"


def sidecar_id_prefix(agent: str) -> str:
    """What every sidecar id of ``agent`` starts with, so its health key is in its range."""
    return f"{validate_name(agent, what='agent')}."


def layout(env: str, agents: list[str]) -> list[Principal]:
    ks = Keyspace(env)
    admin = configsvc_user(env)
    probe = Grant(admin, "read", PROBE_KEY, exact=True)
    out = [Principal(admin, (probe, Grant(admin, "readwrite", ks.prefix)))]
    for agent in sorted(set(agents)):
        name = sidecar_user(env, agent)
        out.append(
            Principal(
                name,
                (
                    Grant(name, "read", PROBE_KEY, exact=True),
                    Grant(name, "read", ks.prefix),
                    Grant(name, "readwrite", ks.pins_of(agent)),
                    Grant(name, "readwrite", ks.state_owners_of(agent)),
                    *(
                        Grant(
                            name, "readwrite", f"{ks.kind_prefix(kind)}{sidecar_id_prefix(agent)}"
                        )
                        for kind in ("health", "spend", "outcomes")
                    ),
                ),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Step:
    """One ``etcdctl`` call (without connection flags); ``password_of`` names the user whose
    password it reads from stdin (``--interactive=false``), never from the command line."""

    argv: tuple[str, ...]
    password_of: str = ""

    def shell(self) -> str:
        text = "etcdctl " + " ".join(shlex.quote(a) for a in self.argv)
        if self.password_of:
            # Printed for a person: let etcdctl prompt instead of reading stdin.
            text = text.replace(" --interactive=false", "")
        return text


def steps(env: str, agents: list[str], *, users: bool = True, enable: bool = False) -> list[Step]:
    """Idempotent-enough steps: roles, their grants, then users (and ``auth enable`` last)."""
    out: list[Step] = []
    principals = layout(env, agents)
    for p in principals:
        out.append(Step(("role", "add", p.name)))
        for g in p.grants:
            scope = () if g.exact else ("--prefix",)
            out.append(Step(("role", "grant-permission", *scope, g.role, g.access, g.prefix)))
    if users:
        for p in principals:
            out.append(Step(("user", "add", p.name, "--interactive=false"), password_of=p.name))
            out.append(Step(("user", "grant-role", p.name, p.name)))
    if enable:
        out.append(Step(("user", "add", ROOT, "--interactive=false"), password_of=ROOT))
        out.append(Step(("user", "grant-role", ROOT, ROOT)))
        out.append(Step(("auth", "enable")))
    return out


def script(env: str, agents: list[str], *, users: bool, enable: bool) -> str:
    """A shell script a person can read and paste (etcdctl prompts for each password)."""
    lines = [
        "# Holdfast etcd role layout for environment "
        f"{env!r} (agents: {', '.join(sorted(set(agents))) or 'none'})",
        "# Connection: export ETCDCTL_API=3 ETCDCTL_ENDPOINTS=https://HOST:2379 \\",
        "#   ETCDCTL_CACERT=ca.pem ETCDCTL_CERT=admin.pem ETCDCTL_KEY=admin-key.pem",
        "# Once auth is on, also: export ETCDCTL_USER=root (etcdctl prompts for the password)",
        "set -e",
    ]
    lines += [s.shell() for s in steps(env, agents, users=users, enable=enable)]
    return "\n".join(lines) + "\n"
