"""``holdfastctl serve``: its options, and starting the server.

The server's modules (aiohttp, the etcd client, the records) load only when ``serve`` runs, so
that the operator commands stay quick to start: this module imports only the light
``configsvc.server.limits`` and ``configsvc.settings`` at the top, and ``configsvc.server``'s
settings and process inside ``serve_main`` (the two imports the import-linter contract
"holdfastctl's commands load no server code" lets through, by name).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Final

from configsvc.cli.commands import Leaf
from configsvc.server.limits import ServeLimitsError, add_serve_limit_options, serve_limits_from
from configsvc.settings import DEFAULT_LISTEN, SettingsError
from holdfast.options.common import ENV_ENV, ENV_ETCD
from holdfast.options.etcd import etcd_tls_options

PROG: Final = "holdfastctl"
EXIT_USAGE: Final = 2


def register_serve(nouns: Any, leaf: Leaf) -> None:
    serve = leaf(nouns, "serve", None, "run the config service")
    serve.add_argument("--listen", default=None, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    serve.add_argument(
        "--etcd", default=None, help=f"etcd endpoints, comma-separated (${ENV_ETCD})"
    )
    serve.add_argument("--env", default=None, help=f"environment (${ENV_ENV}, default dev)")
    serve.add_argument(
        "--tokens-file",
        default=None,
        help="JSON lines {subject, role, sha256} of accepted tokens ($HOLDFAST_TOKENS_FILE)",
    )
    serve.add_argument(
        "--require-token-for-reads",
        action="store_true",
        help="reads need a token (viewer or above) from loopback peers too",
    )
    etcd_tls_options(serve)
    serve.add_argument(
        "--allow-no-token",
        action="store_true",
        help="accept unauthenticated changes (throwaway local use only)",
    )
    serve.add_argument(
        "--probe-timeout",
        type=float,
        default=None,
        help="seconds a switch's warm-up may take",
    )
    serve.add_argument(
        "--rollout-tick", type=float, default=None, help="seconds between rollout controller checks"
    )
    serve.add_argument(
        "--leader-ttl",
        type=int,
        default=None,
        help="lease TTL of the controllers' leaders and of this replica's membership, seconds",
    )
    serve.add_argument(
        "--advertise-url",
        default=None,
        help="http(s)://host:port where sidecars (health beats) and the other replicas reach "
        "this one ($HOLDFAST_ADVERTISE_URL; default: the listen address; required with a "
        "wildcard --listen)",
    )
    serve.add_argument(
        "--console-interval",
        type=float,
        default=None,
        help="seconds between the console's health samples (its charts' resolution; default 5)",
    )
    add_serve_limit_options(serve)


def serve_main(args: argparse.Namespace) -> int:
    from holdfast.logs import LOG_FORMAT_ENV, LOG_LEVEL_ENV, configure

    configure(
        level=os.environ.get(LOG_LEVEL_ENV, "info"),
        fmt=os.environ.get(LOG_FORMAT_ENV, "json"),
        service="configsvc",
    )
    from configsvc.server.settings import load_serve_settings

    try:
        settings = load_serve_settings(
            listen=args.listen,
            etcd=args.etcd,
            env=args.env,
            token=args.token,
            allow_no_token=args.allow_no_token,
            environ=os.environ,
            probe_timeout=args.probe_timeout,
            rollout_tick=args.rollout_tick,
            leader_ttl=args.leader_ttl,
            console_interval=args.console_interval,
            tokens_file=args.tokens_file,
            require_token_for_reads=args.require_token_for_reads,
            etcd_ca=args.etcd_ca,
            etcd_cert=args.etcd_cert,
            etcd_key=args.etcd_key,
            etcd_user=args.etcd_user,
            etcd_server_name=args.etcd_server_name,
            limits=serve_limits_from(args),
            advertise_url=args.advertise_url,
        )
    except (SettingsError, ServeLimitsError) as exc:
        print(f"{PROG} serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from configsvc.server.run import run  # the etcd client loads only for serve

    return run(settings)
