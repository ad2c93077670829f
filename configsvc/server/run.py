"""``holdfastctl serve``: run the config service until SIGTERM/SIGINT, then stop cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import uvloop
from aiohttp import web

from configsvc.budgets import BUDGET_ELECTION, BudgetApi, BudgetController, BudgetOps
from configsvc.console import ConcernOps, Console
from configsvc.contracts import ContractOps, ContractsApi, DriftAudit
from configsvc.errors import ConfigsvcError
from configsvc.experiments import ExperimentOps, ExperimentsApi
from configsvc.flags import FlagOps, FlagsApi
from configsvc.health import (
    BeatsApi,
    FleetHealth,
    GateRecorder,
    GateRecords,
    OwnerBeats,
    OwnerHealth,
    Peers,
    PolicyGate,
    ReplicaSet,
    StatusApi,
)
from configsvc.http import Authorizer, replica_entry, replica_token
from configsvc.leader import ROLLOUT_ELECTION, Election
from configsvc.leader.election import default_identity
from configsvc.metrics import ControlPlaneCollector, MetricsEndpoint
from configsvc.prompts.api import PromptsApi
from configsvc.prompts.eval import Evaluator
from configsvc.prompts.ops import PromptOps
from configsvc.releases import ConfigService, Prober
from configsvc.rollouts import RolloutApi, RolloutController, RolloutOps, RouteWatch
from configsvc.server.app import build_app
from configsvc.server.limits import server_options
from configsvc.server.settings import ServeSettings
from configsvc.traffic import CategoryApi, PinOps, TrafficApi, TrafficOps
from holdfast.keyspace import Keyspace
from holdfast.logs import get_logger
from holdfast.net.http_logs import redact_parse_errors
from holdfast.options.common import LOOPBACK_HOSTS
from holdfast.store import Store, StoreError
from holdfast.store.factory import open_store

log = get_logger(__name__)


class ListenFailed(RuntimeError):
    """The listening socket could not be opened (port in use, bad address)."""


async def start_site(
    app: web.Application,
    host: str,
    port: int,
    *,
    shutdown_timeout: float = 10.0,
    options: dict[str, Any] | None = None,
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on host:port (0: any free port); returns the runner and the bound port.

    ``options``: aiohttp server limits (``serve_limits.server_options``)."""
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, **(options or {})
    )
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


async def finalize_leftovers(service: ConfigService) -> None:
    """Finish audit entries a previous process left pending; etcd being down is not fatal."""
    try:
        moved = await service.finalize_pending()
    except (ConfigsvcError, StoreError) as exc:
        log.warning("audit_startup_finalize_skipped", error=str(exc))
        return
    if moved:
        log.info("audit_startup_finalized", count=moved)


async def serve(settings: ServeSettings, store: Store) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # One HTTP session for every switch's warm-up probe, for the life of the process.
    upstream = settings.limits.host_policy()
    prober = Prober(timeout=settings.probe_timeout, prompt=settings.probe_prompt, policy=upstream)
    evaluator = Evaluator(settings=settings.evaluation, policy=upstream)
    try:
        service = ConfigService(store, Keyspace(settings.env))
        try:
            await store.connect()
        except StoreError as exc:  # answer 503 until etcd is back, rather than not start at all
            log.warning("etcd_unavailable_at_start", error=str(exc))
        else:
            await finalize_leftovers(service)
        if not settings.auth_required:
            log.warning("configsvc_auth_disabled", hint="anyone on this host can change config")
        pins = PinOps(service)
        rollouts = RolloutOps(service, pins)
        election = Election(store, service.keyspace, ROLLOUT_ELECTION, ttl=settings.leader_ttl)
        # The replicas share the agents' health: each registers in members/ and holds the
        # health of the agents it owns; beats come over HTTP, not through etcd.
        replicas = ReplicaSet(
            store, service.keyspace, replica=default_identity(), ttl=settings.leader_ttl
        )
        fleet = FleetHealth(store, service.keyspace)
        drift_audit = DriftAudit(service)
        fleet.on_snapshot(drift_audit.observe)
        records = GateRecords(store, service.keyspace, replicas)
        gate = PolicyGate(fleet, records)
        recorder = GateRecorder(store, service.keyspace, records, gate, tick=settings.rollout_tick)
        peers = Peers()
        route_watch = RouteWatch(store, service.keyspace)
        controller = RolloutController(
            rollouts, election, tick=settings.rollout_tick, gate=gate, routes=route_watch
        )
        budget_election = Election(
            store, service.keyspace, BUDGET_ELECTION, ttl=settings.leader_ttl
        )
        budget_controller = BudgetController(store, service.keyspace, budget_election)
        await prober.start()
        await evaluator.start()
        prompts = PromptOps(
            service, gate=settings.prompt_gate, min_cases=settings.evaluation.min_cases
        )
        beats = OwnerBeats(fleet, replicas, peers)
        traffic = TrafficApi(TrafficOps(service, prober, pins, beats), pins)
        tokens, peer_headers = settings.tokens, {}
        if settings.auth_required:
            # The replicas' own viewer token: the console asks an agent's owners for its health.
            tokens = (*tokens, replica_entry(settings.console_secret))
            peer_headers = {"Authorization": f"Bearer {replica_token(settings.console_secret)}"}
        service.read_beats_from(beats, peer_headers)
        authorizer = Authorizer(settings.token, tokens, settings.require_token_for_reads)
        budget_ops, flag_ops = BudgetOps(service), FlagOps(service)
        contract_ops, experiment_ops = ContractOps(service), ExperimentOps(service)
        console = Console(
            service=service,
            fleet=fleet,
            gate=gate,
            routes=route_watch,
            authorizer=authorizer,
            secret=settings.console_secret,
            sample_interval=settings.console_interval,
            ops=ConcernOps(budget_ops, flag_ops, contract_ops, prompts, experiment_ops),
            owners=OwnerHealth(fleet, replicas, peers, headers=peer_headers),
        )
        metrics = MetricsEndpoint(
            ControlPlaneCollector(
                routes=route_watch,
                fleet=fleet,
                elections={"rollouts": election, "budgets": budget_election},
                extra=console.metric_families,
                replicas=replicas,
            )
        )
        app = build_app(
            service,
            authorizer,
            max_body_bytes=settings.max_body_bytes,
            hosts=settings.limits.accepted_hosts(settings.listen_host),
            upstream=upstream,
            prompts=prompts,
            extra=[
                RolloutApi(rollouts, election, gate),
                StatusApi(rollouts, fleet, gate, replicas, peers),
                BeatsApi(fleet, replica=replicas.replica),
                traffic,
                ContractsApi(contract_ops),
                FlagsApi(flag_ops),
                CategoryApi(service),
                BudgetApi(budget_ops),
                PromptsApi(prompts, evaluator),
                ExperimentsApi(experiment_ops),
                metrics,
            ],
            mounts=[console.mount],
        )
        try:
            runner, port = await start_site(
                app,
                settings.listen_host,
                settings.listen_port,
                shutdown_timeout=settings.shutdown_timeout,
                options=server_options(settings.limits),
            )
        except OSError as exc:
            where = f"{settings.listen_host}:{settings.listen_port}"
            raise ListenFailed(f"cannot listen on {where}: {exc}") from exc
        if settings.listen_host not in LOOPBACK_HOSTS:
            log.warning("configsvc_non_loopback_listener", host=settings.listen_host)
        log.info(
            "configsvc_listening",
            host=settings.listen_host,
            port=port,
            env=settings.env,
            etcd=",".join(settings.etcd_endpoints),
            auth="token" if settings.auth_required else "none",
        )
        await fleet.start()  # returns at once; etcd may be down
        await records.start()
        await replicas.start(settings.own_url(port))  # registers once etcd answers
        recorder.start()
        drift_audit.start()
        await route_watch.start()  # likewise
        console.start()
        election.start()
        controller.start()
        budget_election.start()
        budget_controller.start()
        await stop.wait()
        log.info("configsvc_stopping")
        await console.close()  # ends the live pages first, so the runner need not wait on them
        await replicas.close()  # leave first: the sidecars move their beats to the others
        await recorder.close()
        await records.close()
        await peers.close()
        await controller.close()
        await budget_controller.close()
        await budget_election.close()
        await route_watch.close()
        await fleet.close()
        await drift_audit.close()
        await election.close()
        await runner.cleanup()
    finally:
        await prober.close()
        await evaluator.close()
        await store.close()
    log.info("configsvc_stopped")


def run(settings: ServeSettings) -> int:
    """Serve until signalled: 0 after a graceful stop, 1 if it cannot listen, 2 on bad --etcd."""
    redact_parse_errors()  # a malformed request's bytes (its token too) stay out of logs
    try:
        store = open_store(settings.etcd_endpoints, security=settings.etcd_security)
    except ValueError as exc:
        print(f"holdfastctl serve: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(settings, store))
    except ListenFailed as exc:
        log.error("configsvc_listen_failed", error=str(exc))
        print(f"holdfastctl serve: {exc}", file=sys.stderr)
        return 1
    return 0
