"""Every agent's route as etcd has it, kept live by one watch on ``routes/`` per process.

What reads routes often and must not ask etcd each time -- the console's pages and live
updates, configsvc's ``/metrics`` -- reads them here. Subscribers hear of every change at once
(a rollout's step, an abort) in the order etcd made them; a watch that breaks resumes, and
until it does the last routes seen stay, with ``connected`` false.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from holdfast.keyspace import Keyspace, RecordError, Route
from holdfast.logs import get_logger
from holdfast.store import Store
from holdfast.store.mirror import MirrorUpdate, PrefixMirror

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class WatchedRoute:
    route: Route
    mod_revision: int  # etcd revision of the route's last change


class RouteWatch:
    def __init__(self, store: Store, keyspace: Keyspace) -> None:
        self._prefix = keyspace.kind_prefix("routes")
        self._mirror = PrefixMirror(store, self._prefix)
        self._routes: dict[str, WatchedRoute] = {}
        self._unreadable: set[str] = set()
        self._listeners: list[Callable[[frozenset[str]], None]] = []
        self._mirror.subscribe(self._on_update)
        self.version = 0  # moves on every change of any route

    @property
    def connected(self) -> bool:
        return self._mirror.connected

    @property
    def revision(self) -> int:
        return self._mirror.revision

    @property
    def routes(self) -> Mapping[str, WatchedRoute]:
        """agent -> its route (read-only, live)."""
        return MappingProxyType(self._routes)

    def listen(self, callback: Callable[[frozenset[str]], None]) -> None:
        """Call ``callback`` with the agents whose route changed, after each change."""
        self._listeners.append(callback)

    async def start(self) -> None:
        await self._mirror.start()  # returns at once; etcd may be down

    async def close(self) -> None:
        await self._mirror.close()

    def _on_update(self, update: MirrorUpdate) -> None:
        if update.reset:
            changed = set(self._routes)
            self._routes.clear()
            keys = set(update.kvs)
        else:
            changed, keys = set(), {c.key for c in update.changes}
            for change in update.changes:
                if change.kind == "delete":
                    agent = change.key.removeprefix(self._prefix)
                    if self._routes.pop(agent, None) is not None:
                        changed.add(agent)
        for key in keys:
            kv = update.kvs.get(key)
            if kv is None:
                continue
            agent = key.removeprefix(self._prefix)
            try:
                route = Route.decode(kv.value)
            except RecordError as exc:
                if key not in self._unreadable:
                    self._unreadable.add(key)
                    log.warning("route_unreadable", key=key, error=str(exc))
                continue
            self._unreadable.discard(key)
            self._routes[route.agent] = WatchedRoute(route, kv.mod_revision)
            changed.add(route.agent)
        if not changed:
            return
        self.version += 1
        agents = frozenset(changed)
        for callback in self._listeners:
            try:
                callback(agents)
            except Exception:  # one reader's bug must not stop the others hearing of it
                log.exception("route_listener_failed")
