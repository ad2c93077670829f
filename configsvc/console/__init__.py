"""The operator console: a read-only web view of the environment at ``/ui``, served by
configsvc behind the same token roles as its API (viewer and up).

Every agent with its route, rollout and health gate; its releases side by side with their health
as small charts; its sidecars; budgets, flags, contracts, prompts and experiments; the audit
trail. Pages are rendered on the server (Jinja2, inline SVG charts) and kept live by
server-sent events fed by configsvc's own watch and health sampler, never by viewers polling
etcd. ``Console`` wires it; ``configsvc.server`` mounts it. Sign-in: ``console.session``.
"""

from configsvc.console.console import ConcernOps, Console
from configsvc.console.session import COOKIE, Sessions

__all__ = ["COOKIE", "ConcernOps", "Console", "Sessions"]
