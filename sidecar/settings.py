"""Sidecar settings: one frozen object, loaded once from the command line and the environment."""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from holdfast import cliargs
from holdfast.cliargs import DEFAULT_ETCD, ENV_ENV, ENV_ETCD, LOOPBACK_HOSTS
from holdfast.etcd_tls_args import etcd_security_from, etcd_tls_options
from holdfast.keyspace import DEFAULT_ENV, validate_name
from holdfast.keyspace.keys import validate_id
from holdfast.store.security import EtcdSecurity, SecurityError
from sidecar.limits import LimitsError, LimitSettings, add_limit_options, limits_from
from sidecar.prices import PriceError, load_prices

ENV_STATE_DIR: Final = "HOLDFAST_STATE_DIR"
ENV_SIDECAR_ID: Final = "HOLDFAST_SIDECAR_ID"
ENV_LOG_LEVEL: Final = "HOLDFAST_LOG_LEVEL"

DEFAULT_LISTEN: Final = "127.0.0.1:8787"
DEFAULT_STATE_DIR: Final = "./state"
DEFAULT_MAX_BODY_BYTES: Final = 4 * 1024 * 1024
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
DEFAULT_FIRST_BYTE_TIMEOUT: Final = 60.0
DEFAULT_REQUEST_TIMEOUT: Final = 300.0
DEFAULT_STREAM_IDLE_TIMEOUT: Final = 60.0
DEFAULT_STALE_AFTER: Final = 10.0
DEFAULT_DRAIN_TIMEOUT: Final = 20.0
DEFAULT_SHADOW_MAX_CONCURRENCY: Final = 4
DEFAULT_SHADOW_TOKENS_PER_MINUTE: Final = 60_000
DEFAULT_HEALTH_INTERVAL: Final = 2.0
MAX_HEALTH_INTERVAL: Final = 300.0
MIN_HEALTH_INTERVAL: Final = 0.2
DEFAULT_PIN_TTL: Final = 86400
MIN_PIN_TTL: Final = 2  # etcd rounds shorter leases up to about this anyway
DEFAULT_MAX_PENDING_PINS: Final = 100_000
ENV_PIN_CREATE_TIMEOUT: Final = "HOLDFAST_PIN_CREATE_TIMEOUT"
DEFAULT_PIN_CREATE_TIMEOUT: Final = 0.25  # a new session's first turn waits at most this on etcd
MAX_PIN_CREATE_TIMEOUT: Final = 10.0
DEFAULT_BUDGET_MAX_TOKENS: Final = 4096
DEFAULT_BUDGET_ESTIMATOR: Final = "bytes"
DEFAULT_BUDGET_REPORT_INTERVAL: Final = 0.5
DEFAULT_BUDGET_IDLE_AFTER: Final = 30.0
# A fresh sidecar (or a new window) holds no fleet slice yet: a request waits this long for one.
DEFAULT_BUDGET_FIRST_SLICE_WAIT: Final = 2.0


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarSettings:
    agent: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8787
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ETCD,)
    env: str = DEFAULT_ENV
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    sidecar_id: str = ""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    first_byte_timeout: float = DEFAULT_FIRST_BYTE_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    stream_idle_timeout: float = DEFAULT_STREAM_IDLE_TIMEOUT
    stale_after: float = DEFAULT_STALE_AFTER
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    pin_ttl: int = DEFAULT_PIN_TTL
    max_pending_pins: int = DEFAULT_MAX_PENDING_PINS
    pin_create_timeout: float = DEFAULT_PIN_CREATE_TIMEOUT  # 0: first turns never ask etcd
    allow_non_loopback: bool = False
    shadow_max_concurrency: int = DEFAULT_SHADOW_MAX_CONCURRENCY
    shadow_tokens_per_minute: int = DEFAULT_SHADOW_TOKENS_PER_MINUTE
    health_interval: float = DEFAULT_HEALTH_INTERVAL
    budget_max_tokens: int = DEFAULT_BUDGET_MAX_TOKENS
    budget_estimator: str = DEFAULT_BUDGET_ESTIMATOR
    budget_report_interval: float = DEFAULT_BUDGET_REPORT_INTERVAL
    budget_idle_after: float = DEFAULT_BUDGET_IDLE_AFTER
    budget_first_slice_wait: float = DEFAULT_BUDGET_FIRST_SLICE_WAIT
    prices_file: Path | None = None  # JSON price table (sidecar.prices); no file: cost 0
    etcd_security: EtcdSecurity = field(default_factory=EtcdSecurity)
    limits: LimitSettings = field(default_factory=LimitSettings)

    def __post_init__(self) -> None:
        try:
            validate_name(self.agent, what="agent")
            validate_name(self.env, what="environment")
            if self.sidecar_id:
                validate_id(self.sidecar_id, what="sidecar id")
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc
        try:
            self.etcd_security.check_endpoints(self.etcd_endpoints)
        except SecurityError as exc:
            raise SettingsError(str(exc)) from exc
        own = f"{self.agent}."
        if self.etcd_security.auth and self.sidecar_id and not self.sidecar_id.startswith(own):
            raise SettingsError(
                f"--sidecar-id {self.sidecar_id!r} must start with {own!r} under etcd auth: the "
                f"agent's etcd role may write only health/{own}* (holdfastctl etcd-roles)"
            )
        if self.listen_host not in LOOPBACK_HOSTS and not self.allow_non_loopback:
            raise SettingsError(
                f"--listen {self.listen_host} is not loopback; the sidecar serves its own agent "
                "only. Pass --allow-non-loopback if you really mean it."
            )
        for name in (
            "connect_timeout",
            "first_byte_timeout",
            "request_timeout",
            "stream_idle_timeout",
            "stale_after",
            "drain_timeout",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name} must be positive")
        if self.max_body_bytes < 1024:
            raise SettingsError("max body size must be at least 1024 bytes")
        if self.shadow_max_concurrency < 1:
            raise SettingsError("shadow max concurrency must be at least 1")
        if self.shadow_tokens_per_minute < 1:
            raise SettingsError("shadow tokens per minute must be at least 1")
        if not MIN_HEALTH_INTERVAL <= self.health_interval <= MAX_HEALTH_INTERVAL:
            raise SettingsError(
                f"health interval must be between {MIN_HEALTH_INTERVAL:g}s and "
                f"{MAX_HEALTH_INTERVAL:g}s"
            )
        if self.pin_ttl < MIN_PIN_TTL:
            raise SettingsError(f"--pin-ttl must be at least {MIN_PIN_TTL} seconds")
        if self.max_pending_pins < 1:
            raise SettingsError("--max-pending-pins must be at least 1")
        if not 0 <= self.pin_create_timeout <= MAX_PIN_CREATE_TIMEOUT:
            raise SettingsError(
                f"--pin-create-timeout must be 0 (off) to {MAX_PIN_CREATE_TIMEOUT:g} seconds"
            )
        if self.budget_max_tokens < 1:
            raise SettingsError("--budget-max-tokens must be at least 1")
        if self.budget_estimator not in ("bytes", "chars"):
            raise SettingsError("--budget-prompt-estimator must be bytes or chars")
        if not 0.05 <= self.budget_report_interval <= 60 or self.budget_idle_after <= 0:
            raise SettingsError("--budget-report-interval must be 0.05-60s, idle-after positive")
        if not 0 <= self.budget_first_slice_wait <= 30:
            raise SettingsError("--budget-first-slice-wait must be 0-30 seconds")

    @property
    def effective_sidecar_id(self) -> str:
        # <agent>.<host>-<pid>: the agent prefix keeps the health key inside the agent's etcd role.
        return self.sidecar_id or f"{self.agent}.{socket.gethostname()}-{os.getpid()}"[:128]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="holdfast-sidecar",
        description="OpenAI-compatible sidecar that routes an agent's traffic to its release.",
    )
    p.add_argument("--agent", required=True, help="agent name this sidecar serves")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT (default %(default)s)")
    p.add_argument("--etcd", default=None, help=f"etcd endpoints, comma-separated (${ENV_ETCD})")
    p.add_argument("--env", default=None, help=f"environment (${ENV_ENV}, default dev)")
    etcd_tls_options(p)
    p.add_argument("--state-dir", default=None, help="last-known-good snapshot directory")
    p.add_argument(
        "--sidecar-id", default=None, help="id in health keys (default <agent>.<host>-<pid>)"
    )
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    p.add_argument("--connect-timeout", type=float, default=DEFAULT_CONNECT_TIMEOUT)
    p.add_argument("--first-byte-timeout", type=float, default=DEFAULT_FIRST_BYTE_TIMEOUT)
    p.add_argument("--request-timeout", type=float, default=DEFAULT_REQUEST_TIMEOUT)
    p.add_argument("--stream-idle-timeout", type=float, default=DEFAULT_STREAM_IDLE_TIMEOUT)
    p.add_argument("--stale-after", type=float, default=DEFAULT_STALE_AFTER)
    p.add_argument("--drain-timeout", type=float, default=DEFAULT_DRAIN_TIMEOUT)
    p.add_argument(
        "--pin-ttl",
        type=int,
        default=DEFAULT_PIN_TTL,
        help="seconds a session's pin outlives its last use (default %(default)s)",
    )
    p.add_argument(
        "--max-pending-pins",
        type=int,
        default=DEFAULT_MAX_PENDING_PINS,
        help="pin writes queued while etcd is unreachable (default %(default)s)",
    )
    p.add_argument(
        "--pin-create-timeout",
        type=float,
        default=None,
        help="seconds a new session's first turn waits for etcd to create or return its pin "
        f"before deciding locally; 0: never ask (${ENV_PIN_CREATE_TIMEOUT}, "
        f"default {DEFAULT_PIN_CREATE_TIMEOUT:g})",
    )
    p.add_argument("--allow-non-loopback", action="store_true")
    p.add_argument(
        "--shadow-max-concurrency",
        type=int,
        default=DEFAULT_SHADOW_MAX_CONCURRENCY,
        help="shadow calls in flight at once; more samples are skipped (default %(default)s)",
    )
    p.add_argument(
        "--shadow-tokens-per-minute",
        type=int,
        default=DEFAULT_SHADOW_TOKENS_PER_MINUTE,
        help="token budget of shadow calls (default %(default)s)",
    )
    p.add_argument(
        "--health-interval",
        type=float,
        default=DEFAULT_HEALTH_INTERVAL,
        help="seconds between health snapshots; the key's lease lasts ~3 of them",
    )
    p.add_argument(
        "--prices",
        type=Path,
        default=None,
        help="JSON price table: {release-or-model: {input_per_1m, output_per_1m}} in USD",
    )
    p.add_argument(
        "--budget-max-tokens",
        type=int,
        default=DEFAULT_BUDGET_MAX_TOKENS,
        help="max_tokens written into budgeted requests that carry none (default %(default)s)",
    )
    p.add_argument(
        "--budget-prompt-estimator",
        choices=("bytes", "chars"),
        default=DEFAULT_BUDGET_ESTIMATOR,
        help="bytes: an upper bound (no overspend); chars: chars/4, closer (default %(default)s)",
    )
    p.add_argument(
        "--budget-report-interval",
        type=float,
        default=DEFAULT_BUDGET_REPORT_INTERVAL,
        help="seconds between spend reports of fleet-wide budgets (default %(default)s)",
    )
    p.add_argument(
        "--budget-idle-after",
        type=float,
        default=DEFAULT_BUDGET_IDLE_AFTER,
        help="seconds without requests after which a fleet slice is given back",
    )
    p.add_argument(
        "--budget-first-slice-wait",
        type=float,
        default=DEFAULT_BUDGET_FIRST_SLICE_WAIT,
        help="seconds a request waits for this sidecar's first slice of a fleet-wide budget "
        "(at start, at a window turn) before it is refused (default %(default)s; 0: refuse)",
    )
    add_limit_options(p)
    return p


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> SidecarSettings:
    args = build_parser().parse_args(list(argv))
    if args.prices is not None:
        try:
            load_prices(args.prices)  # refuse a bad price table at start, not on a request
        except PriceError as exc:
            raise SettingsError(str(exc)) from exc
    host, port = cliargs.parse_listen(args.listen, error=SettingsError)
    try:
        limits = limits_from(args)
    except LimitsError as exc:
        raise SettingsError(str(exc)) from exc
    try:
        security = etcd_security_from(args, environ)
    except SecurityError as exc:
        raise SettingsError(str(exc)) from exc
    return SidecarSettings(
        agent=args.agent,
        listen_host=host,
        listen_port=port,
        etcd_endpoints=cliargs.parse_endpoints(
            args.etcd or environ.get(ENV_ETCD, DEFAULT_ETCD), error=SettingsError
        ),
        env=args.env or environ.get(ENV_ENV, DEFAULT_ENV),
        state_dir=Path(args.state_dir or environ.get(ENV_STATE_DIR, DEFAULT_STATE_DIR)),
        sidecar_id=args.sidecar_id or environ.get(ENV_SIDECAR_ID, ""),
        max_body_bytes=args.max_body_bytes,
        connect_timeout=args.connect_timeout,
        first_byte_timeout=args.first_byte_timeout,
        request_timeout=args.request_timeout,
        stream_idle_timeout=args.stream_idle_timeout,
        stale_after=args.stale_after,
        drain_timeout=args.drain_timeout,
        pin_ttl=args.pin_ttl,
        max_pending_pins=args.max_pending_pins,
        pin_create_timeout=_pin_create_timeout(args.pin_create_timeout, environ),
        allow_non_loopback=args.allow_non_loopback,
        shadow_max_concurrency=args.shadow_max_concurrency,
        shadow_tokens_per_minute=args.shadow_tokens_per_minute,
        health_interval=args.health_interval,
        budget_max_tokens=args.budget_max_tokens,
        budget_estimator=args.budget_prompt_estimator,
        budget_report_interval=args.budget_report_interval,
        budget_idle_after=args.budget_idle_after,
        budget_first_slice_wait=args.budget_first_slice_wait,
        prices_file=args.prices,
        etcd_security=security,
        limits=limits,
    )


def _pin_create_timeout(flag: float | None, environ: Mapping[str, str]) -> float:
    if flag is not None:
        return flag
    raw = environ.get(ENV_PIN_CREATE_TIMEOUT, "")
    if not raw:
        return DEFAULT_PIN_CREATE_TIMEOUT
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"${ENV_PIN_CREATE_TIMEOUT} is not a number: {raw!r:.40}") from exc
