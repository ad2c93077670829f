"""Key builders and the key parser for everything under ``/holdfast/<env>/``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# re-exported: the rest of the code base names them here
from holdfast.names import DEFAULT_ENV as DEFAULT_ENV
from holdfast.names import FLAG_KEY_RE as FLAG_KEY_RE
from holdfast.names import ID_RE as ID_RE
from holdfast.names import NAME_RE as NAME_RE
from holdfast.names import KeyError_ as KeyError_
from holdfast.names import validate_id as validate_id
from holdfast.names import validate_name as validate_name

ROOT: Final = "/holdfast"

AUDIT_REVISION_DIGITS: Final = 20

# How many path segments follow the kind, e.g. releases/<agent>/<release> has two.
_SEGMENTS: Final = {
    "flags": 1,
    "releases": 2,
    "routes": 1,
    "prompts": 2,
    "contracts": 2,
    "budgets": 1,
    "pins": 2,
    "responses": 2,
    "health": 1,
    "audit": 1,
    "election": 1,
    "quotas": 1,
    "spend": 2,
    "experiments": 1,
    "prices": 1,
    "outcomes": 2,
    "members": 1,
    "gates": 1,
    "slices": 2,
    "drift": 1,
}
# Kinds whose keys start with the agent they belong to (``<kind>/<agent>/...``): a sidecar watches
# its own agent's part of each, and nothing of another agent's.
AGENT_SCOPED: Final = frozenset({"releases", "pins", "responses", "slices"})


@dataclass(frozen=True, slots=True)
class ParsedKey:
    kind: str
    parts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Keyspace:
    """All keys of one environment. Build keys only through this class."""

    env: str = DEFAULT_ENV

    def __post_init__(self) -> None:
        validate_name(self.env, what="environment")

    @property
    def prefix(self) -> str:
        return f"{ROOT}/{self.env}/"

    def kind_prefix(self, kind: str) -> str:
        if kind not in _SEGMENTS:
            raise KeyError_(f"unknown kind {kind!r}")
        return f"{self.prefix}{kind}/"

    def agent_prefix(self, kind: str, agent: str) -> str:
        """``<kind>/<agent>/``: everything of an agent-scoped kind that belongs to ``agent``."""
        if kind not in AGENT_SCOPED:
            raise KeyError_(f"kind {kind!r} is not agent-scoped")
        return f"{self.kind_prefix(kind)}{validate_name(agent, what='agent')}/"

    def flag(self, flag: str) -> str:
        if not FLAG_KEY_RE.fullmatch(flag):
            raise KeyError_(
                f"invalid flag key {flag!r:.140}: use 1-128 characters of A-Z, a-z, 0-9, '.', "
                "'_' or '-', starting with a letter or digit"
            )
        return f"{self.prefix}flags/{flag}"

    def release(self, agent: str, release: str) -> str:
        agent = validate_name(agent, what="agent")
        return f"{self.prefix}releases/{agent}/{validate_name(release, what='release')}"

    def releases_of(self, agent: str) -> str:
        return self.agent_prefix("releases", agent)

    def route(self, agent: str) -> str:
        return f"{self.prefix}routes/{validate_name(agent, what='agent')}"

    def prompt(self, name: str, version: str) -> str:
        name = validate_name(name, what="prompt")
        return f"{self.prefix}prompts/{name}/{validate_name(version, what='prompt version')}"

    def prompts_of(self, name: str) -> str:
        return f"{self.prefix}prompts/{validate_name(name, what='prompt')}/"

    def experiment(self, name: str) -> str:
        return f"{self.prefix}experiments/{validate_name(name, what='experiment')}"

    def outcome(self, experiment: str, sidecar_id: str) -> str:
        """One sidecar's cumulative experiment outcomes; no lease: they outlive the sidecar.
        The sidecar id comes first so that an etcd role can grant an agent's sidecars
        ``outcomes/<agent>.`` and nothing else (holdfast.etcd_roles)."""
        name = validate_name(experiment, what="experiment")
        return f"{self.prefix}outcomes/{validate_id(sidecar_id, what='sidecar id')}/{name}"

    def contract(self, tool: str, version: str) -> str:
        tool = validate_name(tool, what="tool")
        return f"{self.prefix}contracts/{tool}/{validate_name(version, what='contract version')}"

    def drift(self, ident: str) -> str:
        """One MCP backend's drift from a contract version, recorded once (keyspace.drift)."""
        return f"{self.prefix}drift/{validate_id(ident, what='drift id')}"

    def budget(self, scope: str) -> str:
        return f"{self.prefix}budgets/{validate_id(scope, what='budget scope')}"

    def quotas(self, scope: str) -> str:
        """The slices of a fleet-wide budget handed to sidecars (written by configsvc)."""
        return f"{self.prefix}quotas/{validate_id(scope, what='budget scope')}"

    def slice(self, agent: str, scope: str) -> str:
        """The part of ``quotas/<scope>`` that concerns one agent's sidecars (their grants and
        the fleet's figures), written by the budget controller: what the agent's sidecars watch
        instead of every holder's grants."""
        scope = validate_id(scope, what="budget scope")
        return f"{self.agent_prefix('slices', agent)}{scope}"

    def spend(self, scope: str, holder: str) -> str:
        """One sidecar's spend against a fleet-wide budget (written by it, under its lease).
        Holder first, like outcomes: an agent's sidecars may write ``spend/<agent>.`` only."""
        scope = validate_id(scope, what="budget scope")
        return f"{self.prefix}spend/{validate_id(holder, what='quota holder')}/{scope}"

    def prices(self) -> str:
        """The fleet's one price table (holdfast.keyspace.price)."""
        return f"{self.prefix}prices/table"

    def pin(self, agent: str, session: str) -> str:
        agent = validate_name(agent, what="agent")
        return f"{self.prefix}pins/{agent}/{validate_id(session, what='session')}"

    def pins_of(self, agent: str) -> str:
        return self.agent_prefix("pins", agent)

    def state_owner(self, agent: str, state_id: str) -> str:
        """Which release issued a provider-held state id (holdfast.keyspace.state_owner)."""
        agent = validate_name(agent, what="agent")
        return f"{self.prefix}responses/{agent}/{validate_id(state_id, what='state id')}"

    def state_owners_of(self, agent: str) -> str:
        return self.agent_prefix("responses", agent)

    def health(self, sidecar_id: str) -> str:
        return f"{self.prefix}health/{validate_id(sidecar_id, what='sidecar id')}"

    def member(self, replica: str) -> str:
        """A live configsvc replica, under its lease: where sidecars send health
        (holdfast.keyspace.member)."""
        return f"{self.prefix}members/{validate_id(replica, what='replica id')}"

    def gate(self, agent: str) -> str:
        """The health gate's latest evaluation of the agent's rollout, written by the replica
        that holds the agent's health (holdfast.keyspace.gate)."""
        return f"{self.prefix}gates/{validate_name(agent, what='agent')}"

    def audit(self, revision: int) -> str:
        if revision < 0:
            raise KeyError_(f"invalid audit revision {revision}")
        # Zero-padded so that etcd's byte order is revision order.
        return f"{self.prefix}audit/{revision:0{AUDIT_REVISION_DIGITS}d}"

    def audit_pending(self, token: str) -> str:
        return f"{self.prefix}audit/pending/{validate_id(token, what='audit token')}"

    def election(self, name: str) -> str:
        """The key whose holder (under a lease) leads ``name``, e.g. the rollout controller."""
        return f"{self.prefix}election/{validate_name(name, what='election')}"

    def parse(self, key: str) -> ParsedKey:
        """Split a key of this environment into its kind and segments, or raise KeyError_."""
        if not key.startswith(self.prefix):
            raise KeyError_(f"key {key!r} is outside {self.prefix}")
        kind, _, rest = key[len(self.prefix) :].partition("/")
        want = _SEGMENTS.get(kind)
        if want is None:
            raise KeyError_(f"key {key!r} has unknown kind {kind!r}")
        parts = tuple(rest.split("/")) if rest else ()
        if kind == "audit" and len(parts) == 2 and parts[0] == "pending":
            return ParsedKey(kind="audit_pending", parts=parts[1:])
        if len(parts) != want or not all(parts):
            raise KeyError_(f"key {key!r} should have {want} segment(s) after {kind}/")
        return ParsedKey(kind=kind, parts=parts)
