"""Sidecar settings: one frozen object, loaded once from the command line and the environment
(sidecar.cli_args)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from holdfast.keyspace import DEFAULT_ENV, validate_name
from holdfast.keyspace.keys import validate_id
from holdfast.options.common import DEFAULT_ETCD, LOOPBACK_HOSTS
from holdfast.store.security import EtcdSecurity, SecurityError
from sidecar.settings.limits import LimitSettings

ENV_STATE_DIR: Final = "HOLDFAST_STATE_DIR"
ENV_SIDECAR_ID: Final = "HOLDFAST_SIDECAR_ID"
# The configsvc token (role sidecar) health beats carry; a secret, so never a flag.
ENV_SIDECAR_TOKEN: Final = "HOLDFAST_SIDECAR_TOKEN"  # noqa: S105 - a variable name
# The OpenTelemetry SDK's own variables, read for the traces endpoint (sidecar.tracing).
ENV_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENV_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"  # a base URL: /v1/traces is added
ENV_OTEL_DISABLED: Final = "OTEL_SDK_DISABLED"
ENV_OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"

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
# Requests waiting for budget (reservations in flight to settle, a slice to move here): at most
# this many, holding at most this many bytes of request bodies; beyond, refused at once.
DEFAULT_BUDGET_QUEUE_MAX: Final = 1000
DEFAULT_BUDGET_QUEUE_MAX_BYTES: Final = 64 * 1024 * 1024


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
    budget_queue_max: int = DEFAULT_BUDGET_QUEUE_MAX
    budget_queue_max_bytes: int = DEFAULT_BUDGET_QUEUE_MAX_BYTES
    prices_file: Path | None = None  # JSON price table (sidecar.prices); no file: cost 0
    otlp_endpoint: str = ""  # OTLP/HTTP traces URL; "": tracing off (sidecar.tracing)
    etcd_security: EtcdSecurity = field(default_factory=EtcdSecurity)
    limits: LimitSettings = field(default_factory=LimitSettings)
    sidecar_token: str = field(default="", repr=False)  # $HOLDFAST_SIDECAR_TOKEN

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
        if self.budget_estimator not in ("bytes", "chars", "tokens"):
            raise SettingsError("--budget-prompt-estimator must be bytes, chars or tokens")
        if not 0.05 <= self.budget_report_interval <= 60 or self.budget_idle_after <= 0:
            raise SettingsError("--budget-report-interval must be 0.05-60s, idle-after positive")
        if not 0 <= self.budget_first_slice_wait <= 30:
            raise SettingsError("--budget-first-slice-wait must be 0-30 seconds")
        if not 0 <= self.budget_queue_max <= 1_000_000:
            raise SettingsError("--budget-queue-max must be 0 (no waiting) to 1000000 requests")
        if not 0 <= self.budget_queue_max_bytes <= 1 << 40:
            raise SettingsError("--budget-queue-max-bytes must be 0 to 1 TiB")
        if self.otlp_endpoint:
            parts = urlsplit(self.otlp_endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(
                    f"--otlp-endpoint {self.otlp_endpoint!r:.200} must be an http(s) URL, "
                    "e.g. http://127.0.0.1:4318/v1/traces"
                )

    @property
    def effective_sidecar_id(self) -> str:
        # <agent>.<host>-<pid>: the agent prefix keeps the health key inside the agent's etcd role.
        return self.sidecar_id or f"{self.agent}.{socket.gethostname()}-{os.getpid()}"[:128]
