"""The sidecar's command line: flags, environment fallbacks, and the SidecarSettings they make.

The defaults live beside SidecarSettings (sidecar.settings), which also checks every value, so
settings built in code and settings parsed here are held to the same rules.
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

from holdfast.keyspace import DEFAULT_ENV
from holdfast.options import common as cliargs
from holdfast.options.common import DEFAULT_ETCD, ENV_ENV, ENV_ETCD
from holdfast.options.etcd import etcd_security_from, etcd_tls_options
from holdfast.store.security import SecurityError
from sidecar.config import PriceError, load_prices
from sidecar.settings.limits import LimitsError, add_limit_options, limits_from
from sidecar.settings.model import (
    DEFAULT_BUDGET_ESTIMATOR,
    DEFAULT_BUDGET_FIRST_SLICE_WAIT,
    DEFAULT_BUDGET_IDLE_AFTER,
    DEFAULT_BUDGET_MAX_TOKENS,
    DEFAULT_BUDGET_QUEUE_MAX,
    DEFAULT_BUDGET_QUEUE_MAX_BYTES,
    DEFAULT_BUDGET_REPORT_INTERVAL,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_FIRST_BYTE_TIMEOUT,
    DEFAULT_HEALTH_INTERVAL,
    DEFAULT_LISTEN,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_PENDING_PINS,
    DEFAULT_PIN_CREATE_TIMEOUT,
    DEFAULT_PIN_TTL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SHADOW_MAX_CONCURRENCY,
    DEFAULT_SHADOW_TOKENS_PER_MINUTE,
    DEFAULT_STALE_AFTER,
    DEFAULT_STATE_DIR,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    ENV_OTEL_DISABLED,
    ENV_OTEL_TRACES_EXPORTER,
    ENV_OTLP_ENDPOINT,
    ENV_OTLP_TRACES_ENDPOINT,
    ENV_PIN_CREATE_TIMEOUT,
    ENV_SIDECAR_ID,
    ENV_SIDECAR_TOKEN,
    ENV_STATE_DIR,
    SettingsError,
    SidecarSettings,
)


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
        help="seconds between health beats (to configsvc's replicas holding the agent's health, "
        "with the token in $HOLDFAST_SIDECAR_TOKEN); the etcd presence key's lease lasts ~3 "
        "of them",
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
        choices=("tokens", "bytes", "chars"),
        default=DEFAULT_BUDGET_ESTIMATOR,
        help="bytes: UTF-8 size; tokens: the model family's tokenizer where one ships with its "
        "data, else bytes (both upper bounds: no overspend; tokens loads ~95 MB of encodings "
        "at start); chars: chars/4, closer but may be short (default %(default)s)",
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
    p.add_argument(
        "--budget-queue-max",
        type=int,
        default=DEFAULT_BUDGET_QUEUE_MAX,
        help="requests that may wait for budget at once (each budget's --queue-timeout says "
        "how long); beyond, refused at once (default %(default)s; 0: nobody waits)",
    )
    p.add_argument(
        "--budget-queue-max-bytes",
        type=int,
        default=DEFAULT_BUDGET_QUEUE_MAX_BYTES,
        help="bytes of request bodies the requests waiting for budget may hold together "
        "(default %(default)s)",
    )
    p.add_argument(
        "--otlp-endpoint",
        default=None,
        metavar="URL",
        help="send OpenTelemetry traces (a span per model and tool call) to this OTLP/HTTP "
        f"traces URL, e.g. http://127.0.0.1:4318/v1/traces (${ENV_OTLP_TRACES_ENDPOINT}, or "
        f"${ENV_OTLP_ENDPOINT} + /v1/traces; default: off). Needs holdfast[otel]",
    )
    add_limit_options(p)
    return p


def otlp_endpoint(flag: str | None, environ: Mapping[str, str]) -> str:
    """The traces URL: the flag, else the SDK's standard variables (unless they turn the SDK
    or its trace export off); "" when tracing stays off."""
    if flag is not None:
        return flag.strip()
    if environ.get(ENV_OTEL_DISABLED, "").strip().lower() == "true":
        return ""
    if environ.get(ENV_OTEL_TRACES_EXPORTER, "").strip().lower() == "none":
        return ""
    if traces := environ.get(ENV_OTLP_TRACES_ENDPOINT, "").strip():
        return traces
    if base := environ.get(ENV_OTLP_ENDPOINT, "").strip():
        return base.rstrip("/") + "/v1/traces"
    return ""


def load_settings(argv: Sequence[str], environ: Mapping[str, str]) -> SidecarSettings:
    args = build_parser().parse_args(list(argv))
    if args.budget_prompt_estimator == "tokens" and importlib.util.find_spec("quicktok") is None:
        raise SettingsError(
            "--budget-prompt-estimator tokens needs the tokenizers of the `tokens` extra: "
            "pip install 'holdfast[tokens]'"
        )
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
        budget_queue_max=args.budget_queue_max,
        budget_queue_max_bytes=args.budget_queue_max_bytes,
        prices_file=args.prices,
        otlp_endpoint=otlp_endpoint(args.otlp_endpoint, environ),
        etcd_security=security,
        limits=limits,
        sidecar_token=environ.get(ENV_SIDECAR_TOKEN, "").strip(),
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
