"""``holdfast-fakellm``: serve the fake upstream until SIGTERM/SIGINT, then close and exit 0."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import uvloop

from holdfast.logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV, configure, get_logger
from holdfast.options.common import LOOPBACK_HOSTS, parse_listen
from holdfast_devtools.fakellm.app import (
    DEFAULT_MODELS,
    DEFAULT_REQUEST_LOG_SIZE,
    FakeLLM,
    FakeSettings,
    start,
)
from holdfast_devtools.fakellm.behaviour import (
    DEFAULT_COMPLETION_TOKENS,
    DEFAULT_ERROR_STATUS,
    DEFAULT_RETRY_AFTER_S,
    Behaviour,
)

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9900
DEFAULT_LISTEN: Final = f"{DEFAULT_HOST}:{DEFAULT_PORT}"
# The key may come from the environment instead of --require-key, which `ps` would show.
REQUIRE_KEY_ENV: Final = "HOLDFAST_FAKELLM_KEY"

log = get_logger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    listen_host: str = DEFAULT_HOST
    listen_port: int = DEFAULT_PORT
    fake: FakeSettings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="holdfast-fakellm", description=__doc__)
    p.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT; port 0 picks a free one")
    p.add_argument("--latency-ms", type=float, default=0.0, help="non-streaming reply delay")
    p.add_argument("--first-byte-ms", type=float, default=0.0, help="delay before a stream starts")
    p.add_argument("--token-interval-ms", type=float, default=0.0, help="delay between chunks")
    p.add_argument("--error-rate", type=float, default=0.0, help="0..1, every 1/rate-th fails")
    p.add_argument("--error-status", type=int, default=DEFAULT_ERROR_STATUS)
    p.add_argument("--retry-after-s", type=int, default=DEFAULT_RETRY_AFTER_S, help="for 429")
    p.add_argument("--completion-tokens", type=int, default=DEFAULT_COMPLETION_TOKENS)
    p.add_argument("--tool-calls", action="store_true", help="call a tool whenever tools exist")
    p.add_argument("--omit-usage", action="store_true", help="never report usage")
    p.add_argument(
        "--require-key",
        default=None,
        help=f"the only key accepted: 'Authorization: Bearer KEY' on OpenAI's endpoints, "
        f"'x-api-key: KEY' on Anthropic's (or ${REQUIRE_KEY_ENV})",
    )
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated")
    p.add_argument("--request-log-size", type=int, default=DEFAULT_REQUEST_LOG_SIZE)
    return p


def load_settings(argv: Sequence[str], env: Mapping[str, str]) -> ServeSettings:
    """Settings from the command line (and the key's env var); ValueError names a bad one."""
    args = _parser().parse_args(argv)
    host, port = parse_listen(args.listen)
    defaults = Behaviour(
        latency_ms=args.latency_ms,
        first_byte_ms=args.first_byte_ms,
        token_interval_ms=args.token_interval_ms,
        error_rate=args.error_rate,
        error_status=args.error_status,
        retry_after_s=args.retry_after_s,
        completion_tokens=args.completion_tokens,
        tool_calls=args.tool_calls,
        omit_usage=args.omit_usage,
    )
    if args.request_log_size < 1:
        raise ValueError("--request-log-size must be at least 1")
    fake = FakeSettings(
        defaults=defaults,
        require_key=args.require_key or env.get(REQUIRE_KEY_ENV) or None,
        models=tuple(m for m in (s.strip() for s in args.models.split(",")) if m),
        request_log_size=args.request_log_size,
    )
    return ServeSettings(listen_host=host, listen_port=port, fake=fake)


async def serve(settings: ServeSettings) -> None:
    fake = FakeLLM(settings.fake)
    runner, port = await start(fake, host=settings.listen_host, port=settings.listen_port)
    if settings.listen_host not in LOOPBACK_HOSTS:
        log.warning("fakellm_non_loopback_listener", host=settings.listen_host)
    log.info(
        "fakellm_listening",
        host=settings.listen_host,
        port=port,
        models=list(settings.fake.models),
        require_key=settings.fake.require_key is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("fakellm_stopping")
    await runner.cleanup()  # closes the listener, then in-flight requests get a short grace
    log.info("fakellm_stopped")


def main(argv: Sequence[str] | None = None) -> int:
    configure(
        level=os.environ.get(LOG_LEVEL_ENV, "info"),
        fmt=os.environ.get(LOG_FORMAT_ENV, "json"),
        service="fakellm",
    )
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ValueError as exc:  # BehaviourError included
        print(f"holdfast-fakellm: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(serve(settings))
    except OSError as exc:  # typically the port is taken
        log.error("fakellm_listen_failed", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
