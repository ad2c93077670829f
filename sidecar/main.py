"""``holdfast-sidecar``: run one sidecar until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

import uvloop
from aiohttp import web

from holdfast.logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV, configure, get_logger
from holdfast.net.http_logs import redact_parse_errors
from holdfast.options.common import LOOPBACK_HOSTS
from sidecar.app import Sidecar
from sidecar.http import drain, runner_shutdown_timeout
from sidecar.settings import SettingsError, SidecarSettings, load_settings, server_options
from sidecar.tracing import TracingUnavailable

log = get_logger(__name__)


async def serve(settings: SidecarSettings) -> None:
    sidecar = Sidecar(settings, os.environ)
    await sidecar.start()
    runner = web.AppRunner(
        sidecar.build_app(),
        handler_cancellation=True,  # a client that hangs up cancels its upstream call
        access_log=None,
        shutdown_timeout=runner_shutdown_timeout(settings.drain_timeout),
        **server_options(settings.limits),
    )
    await runner.setup()
    site = web.TCPSite(runner, host=settings.listen_host, port=settings.listen_port)
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.listen_port
    if settings.listen_host not in LOOPBACK_HOSTS:
        log.warning("sidecar_non_loopback_listener", host=settings.listen_host)
    log.info(
        "sidecar_listening",
        host=settings.listen_host,
        port=port,
        agent=settings.agent,
        env=settings.env,
        sidecar_id=settings.effective_sidecar_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("sidecar_draining", timeout_seconds=settings.drain_timeout)
    # stops accepting, lets requests in flight finish, cuts what outlasts the drain timeout
    await drain(runner, sidecar.upstream, settings.drain_timeout)
    await sidecar.close()
    log.info("sidecar_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    configure(
        level=os.environ.get(LOG_LEVEL_ENV, "info"),
        fmt=os.environ.get(LOG_FORMAT_ENV, "json"),
        service="sidecar",
    )
    redact_parse_errors()  # a malformed request's bytes (its Authorization too) stay out of logs
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except SettingsError as exc:
        print(f"holdfast-sidecar: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(settings))
    except TracingUnavailable as exc:
        print(f"holdfast-sidecar: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
