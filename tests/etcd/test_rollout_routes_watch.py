"""The rollout controller reads routes from the process's watch, not by listing every route
each tick: etcd's cost of an idle controller must not grow with the number of agents."""

from __future__ import annotations

import asyncio
import time

from configsvc.leader.election import Election
from configsvc.releases.ops import ConfigService
from configsvc.rollouts.controller import RolloutController
from configsvc.rollouts.ops import RolloutOps, StartRollout
from configsvc.rollouts.watch import RouteWatch
from holdfast.keyspace import Keyspace, Release, Route
from holdfast.store import KeyValue
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_local import EtcdNode


class Listed(EtcdStore):
    """The adapter, noting every prefix listed through it."""

    listed: list[str]

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        self.listed.append(prefix)
        return await super().list_prefix(prefix)


async def test_an_idle_controller_lists_no_routes_and_a_stale_view_never_steps_twice(
    etcd_node: EtcdNode, etcd_env: str
) -> None:
    counted = Listed([etcd_node.client_url])
    counted.listed = []
    ks = Keyspace(etcd_env)
    now = [time.time()]
    service = ConfigService(counted, ks, clock=lambda: now[0])
    agents = [f"agent{i}" for i in range(20)]
    for agent in agents:
        for name in ("r1", "r2"):
            release = Release(agent=agent, name=name, model="m", base_url="http://h/v1")
            await counted.put(ks.release(agent, name), release.encode())
        await counted.put(ks.route(agent), Route(agent=agent, stable="r1").encode())
    ops = RolloutOps(service)
    watch = RouteWatch(counted, ks)
    controller = RolloutController(
        ops, Election(counted, ks, "test", ttl=5), tick=0.1, routes=watch
    )
    await watch.start()
    try:
        deadline = time.monotonic() + 20
        while not (watch.connected and len(watch.routes) == len(agents)):
            assert time.monotonic() < deadline, "the route watch never caught up"
            await asyncio.sleep(0.02)
        counted.listed.clear()
        for _ in range(5):
            assert await controller.run_once() == 0
        routes_prefix = ks.kind_prefix("routes")
        assert routes_prefix not in counted.listed  # nothing to do costs etcd nothing

        start = StartRollout(release="r2", steps=(10.0, 50.0), interval_s=60.0)
        await ops.start(agents[0], start, "ops")
        while watch.routes[agents[0]].route.rollout is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        now[0] += 61  # the first step is due
        # twice at once: the second round may still see the first step in its watch; the
        # step is judged again on etcd's current route, so it is taken once
        assert sum(await asyncio.gather(controller.run_once(), controller.run_once())) == 1
        route = (await service.get_route(agents[0])).record
        assert route.rollout is not None
        assert (route.rollout.step, route.canary_percent) == (1, 50.0)
        assert routes_prefix not in counted.listed
    finally:
        await watch.close()
        await counted.close()
