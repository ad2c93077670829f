"""Token roles and the one table of what each configsvc endpoint needs (pure; no I/O).

viewer reads; operator moves traffic and flips switches that are reversible in one command
(routes, canary, rollouts, blue-green switch, shadow, pin migration, flag enable/kill, route by
flag, budgets, prompt activation); admin also defines what can be served (releases, tool
contracts, flag files, prompt versions) and anything not named below.

sidecar is apart from that ladder: a sidecar's token may send health beats and nothing else --
not even read (its role ranks below viewer). A beat can move the health gate, so viewers may not
send one; operators and admins may (they can abort a rollout anyway).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class Role(enum.IntEnum):
    SIDECAR = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown role {text!r}: use viewer, operator, admin or sidecar"
            ) from None


READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_AGENT: Final = "/v1/agents/{agent}"

# Mutations operators may do; every other mutation needs admin (new endpoints are admin-only
# until someone decides otherwise here).
OPERATOR_MUTATIONS: Final[Mapping[tuple[str, str], Role]] = {
    ("PUT", f"{_AGENT}/route/stable"): Role.OPERATOR,
    ("POST", f"{_AGENT}/route/rollback"): Role.OPERATOR,
    ("PUT", f"{_AGENT}/route/aliases"): Role.OPERATOR,
    ("PUT", f"{_AGENT}/canary"): Role.OPERATOR,
    ("DELETE", f"{_AGENT}/canary"): Role.OPERATOR,
    ("POST", f"{_AGENT}/switch"): Role.OPERATOR,
    ("PUT", f"{_AGENT}/shadow"): Role.OPERATOR,
    ("DELETE", f"{_AGENT}/shadow"): Role.OPERATOR,
    ("POST", f"{_AGENT}/pins/migrate"): Role.OPERATOR,
    ("POST", f"{_AGENT}/rollout"): Role.OPERATOR,
    ("POST", f"{_AGENT}/rollout/{{action}}"): Role.OPERATOR,
    ("PUT", f"{_AGENT}/route/flag"): Role.OPERATOR,
    ("DELETE", f"{_AGENT}/route/flag"): Role.OPERATOR,
    ("POST", "/v1/flags/{key}/enable"): Role.OPERATOR,
    ("POST", "/v1/flags/{key}/kill"): Role.OPERATOR,
    ("PUT", "/v1/budgets/{scope}"): Role.OPERATOR,
    ("DELETE", "/v1/budgets/{scope}"): Role.OPERATOR,
    ("POST", "/v1/prompts/{name}/rollback"): Role.OPERATOR,
    ("POST", "/v1/prompts/{name}/{version}/eval"): Role.OPERATOR,
    ("POST", "/v1/prompts/{name}/{version}/activate"): Role.OPERATOR,
}
# Named for the record: these need admin (as every unlisted mutation does).
ADMIN_MUTATIONS: Final = frozenset(
    {
        ("POST", f"{_AGENT}/releases"),
        ("POST", "/v1/contracts/{tool}"),
        ("POST", "/v1/mcp/import"),
        ("POST", "/v1/flags/apply"),
        ("POST", "/v1/prompts/{name}"),
    }
)


# Endpoints sidecars call, with the roles accepted there besides those at or above the
# endpoint's required role.
SIDECAR_ENDPOINTS: Final[Mapping[tuple[str, str], Role]] = {
    ("POST", "/v1/health/beats"): Role.OPERATOR,
}


def also_accepted(method: str, route: str) -> frozenset[Role]:
    """Roles accepted on ``method route`` even though they rank below its required role."""
    if (method.upper(), route) in SIDECAR_ENDPOINTS:
        return frozenset({Role.SIDECAR})
    return frozenset()


def required_role(method: str, route: str) -> Role:
    """The least role that may call ``method`` on the route pattern ``route``."""
    method = method.upper()
    if method in READ_METHODS:
        return Role.VIEWER
    sidecar = SIDECAR_ENDPOINTS.get((method, route))
    if sidecar is not None:
        return sidecar
    return OPERATOR_MUTATIONS.get((method, route), Role.ADMIN)
