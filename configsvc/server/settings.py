"""Settings of ``holdfastctl serve``: frozen, loaded once.

Command-line values win over environment variables, which win over the defaults below. The
operator commands' settings are ``configsvc.cli.settings``; what both share (the token's
variable, the default address, ``SettingsError``) is ``configsvc.settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from configsvc.http import TokenEntry, TokensFileError, load_tokens_file
from configsvc.prompts.settings import EvalSettings, PromptSettingsError
from configsvc.server.limits import ServeLimits
from configsvc.settings import DEFAULT_LISTEN, ENV_TOKEN, SettingsError
from holdfast.names import DEFAULT_ENV, validate_name
from holdfast.options import common as cliargs
from holdfast.options.common import DEFAULT_ETCD, ENV_ENV, ENV_ETCD, LOOPBACK_HOSTS
from holdfast.store.security import EtcdSecurity, SecurityError, load_etcd_security

ENV_TOKENS_FILE: Final = "HOLDFAST_TOKENS_FILE"
ENV_ADVERTISE_URL: Final = "HOLDFAST_ADVERTISE_URL"
# Signs the console's session cookies; replicas behind one address share it (else random).
ENV_CONSOLE_SECRET: Final = "HOLDFAST_CONSOLE_SECRET"  # noqa: S105  # a variable's name
MIN_CONSOLE_SECRET: Final = 32

DEFAULT_SHUTDOWN_TIMEOUT: Final = 10.0
MAX_BODY_BYTES: Final = 64 * 1024
DEFAULT_PROBE_TIMEOUT: Final = 10.0
DEFAULT_PROBE_PROMPT: Final = "Reply with the single word: ready"
DEFAULT_ROLLOUT_TICK: Final = 0.5
DEFAULT_LEADER_TTL: Final = 5
DEFAULT_PROMPT_GATE: Final = 0.8
DEFAULT_CONSOLE_INTERVAL: Final = 5.0  # configsvc.console's sampler
ENV_PROMPT_GATE: Final = "HOLDFAST_PROMPT_GATE"
ENV_PROBE_PROMPT: Final = "HOLDFAST_PROBE_PROMPT"
WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - recognised, not bound


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeSettings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 8700
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ETCD,)
    env: str = DEFAULT_ENV
    token: str = field(default="", repr=False)
    tokens: tuple[TokenEntry, ...] = ()  # from --tokens-file (hashes only)
    require_token_for_reads: bool = False
    etcd_security: EtcdSecurity = field(default_factory=EtcdSecurity)
    allow_no_token: bool = False
    max_body_bytes: int = MAX_BODY_BYTES
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    probe_timeout: float = DEFAULT_PROBE_TIMEOUT
    probe_prompt: str = DEFAULT_PROBE_PROMPT
    rollout_tick: float = DEFAULT_ROLLOUT_TICK
    leader_ttl: int = DEFAULT_LEADER_TTL
    prompt_gate: float = DEFAULT_PROMPT_GATE  # minimum eval pass rate to activate a prompt
    evaluation: EvalSettings = field(default_factory=EvalSettings)  # HOLDFAST_EVAL_*, min cases
    limits: ServeLimits = field(default_factory=ServeLimits)
    # Where sidecars and the other replicas reach this one ("": the listen address, if usable).
    advertise_url: str = ""
    console_secret: bytes = field(default_factory=lambda: os.urandom(32), repr=False)
    console_interval: float = DEFAULT_CONSOLE_INTERVAL

    def __post_init__(self) -> None:
        try:
            validate_name(self.env, what="environment")
        except ValueError as exc:
            raise SettingsError(str(exc)) from exc
        try:
            self.etcd_security.check_endpoints(self.etcd_endpoints)
        except SecurityError as exc:
            raise SettingsError(str(exc)) from exc
        if self.require_token_for_reads and not self.auth_required:
            raise SettingsError("--require-token-for-reads needs a token or --tokens-file")
        if not self.auth_required and not self.allow_no_token:
            raise SettingsError(
                f"no token: set ${ENV_TOKEN} or pass --token so that only holders of it can "
                "change configuration (--allow-no-token accepts anyone, for throwaway local use)"
            )
        if not self.auth_required and self.listen_host not in LOOPBACK_HOSTS:
            raise SettingsError(
                f"--allow-no-token is only for a loopback listener, not {self.listen_host}"
            )
        if self.shutdown_timeout <= 0:
            raise SettingsError("shutdown timeout must be positive")
        if not 0 < self.probe_timeout <= 300:
            raise SettingsError("--probe-timeout must be between 0 and 300 seconds")
        if not self.probe_prompt.strip() or len(self.probe_prompt) > 4096:
            raise SettingsError("the probe prompt must be 1-4096 characters")
        if not 0.05 <= self.rollout_tick <= 60:
            raise SettingsError("--rollout-tick must be between 0.05 and 60 seconds")
        if not 0.5 <= self.console_interval <= 300:
            raise SettingsError("--console-interval must be between 0.5 and 300 seconds")
        if not 2 <= self.leader_ttl <= 300:
            raise SettingsError("--leader-ttl must be between 2 and 300 seconds")
        if len(self.console_secret) < MIN_CONSOLE_SECRET:
            raise SettingsError(
                f"${ENV_CONSOLE_SECRET} must be at least {MIN_CONSOLE_SECRET} characters "
                "(e.g. openssl rand -hex 32)"
            )
        if not 0.0 <= self.prompt_gate <= 1.0:
            raise SettingsError(f"${ENV_PROMPT_GATE} must be a pass rate between 0 and 1")
        if self.advertise_url:
            parts = urlsplit(self.advertise_url)
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or parts.username
            ):
                raise SettingsError(
                    f"--advertise-url {self.advertise_url!r:.200} must be http(s)://host[:port]"
                )
        elif self.listen_host in WILDCARD_HOSTS:
            raise SettingsError(
                f"--listen {self.listen_host} names no address sidecars can reach: give "
                f"--advertise-url (${ENV_ADVERTISE_URL}), e.g. http://<pod IP>:{self.listen_port}"
            )

    def own_url(self, bound_port: int) -> str:
        """This replica's API as sidecars and the other replicas reach it."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"http://{host}:{bound_port}"

    @property
    def auth_required(self) -> bool:
        return bool(self.token or self.tokens)

    def __repr__(self) -> str:  # never print the token
        return (
            f"ServeSettings(listen={self.listen_host}:{self.listen_port}, "
            f"etcd={','.join(self.etcd_endpoints)}, env={self.env}, "
            f"auth={'token' if self.auth_required else 'none'}, tokens={len(self.tokens)}, "
            f"etcd_security={self.etcd_security.describe()})"
        )


def load_serve_settings(
    *,
    listen: str | None,
    etcd: str | None,
    env: str | None,
    token: str | None,
    allow_no_token: bool,
    environ: Mapping[str, str],
    probe_timeout: float | None = None,
    rollout_tick: float | None = None,
    leader_ttl: int | None = None,
    console_interval: float | None = None,
    tokens_file: str | None = None,
    require_token_for_reads: bool = False,
    etcd_ca: str | None = None,
    etcd_cert: str | None = None,
    etcd_key: str | None = None,
    etcd_user: str | None = None,
    etcd_server_name: str | None = None,
    limits: ServeLimits | None = None,
    advertise_url: str | None = None,
) -> ServeSettings:
    host, port = cliargs.parse_listen(listen or DEFAULT_LISTEN, error=SettingsError)
    tokens_path = (tokens_file or environ.get(ENV_TOKENS_FILE, "")).strip()
    try:
        tokens = load_tokens_file(Path(tokens_path)) if tokens_path else ()
        security = load_etcd_security(
            ca=etcd_ca,
            cert=etcd_cert,
            key=etcd_key,
            user=etcd_user,
            server_name=etcd_server_name,
            environ=environ,
        )
        evaluation = EvalSettings.from_environ(environ)
    except (TokensFileError, SecurityError, PromptSettingsError) as exc:
        raise SettingsError(str(exc)) from exc
    secret = environ.get(ENV_CONSOLE_SECRET, "").strip().encode()
    return ServeSettings(
        console_secret=secret or os.urandom(32),
        listen_host=host,
        listen_port=port,
        etcd_endpoints=cliargs.parse_endpoints(
            etcd or environ.get(ENV_ETCD, "") or DEFAULT_ETCD, error=SettingsError
        ),
        env=env or environ.get(ENV_ENV, "") or DEFAULT_ENV,
        token=(token if token is not None else environ.get(ENV_TOKEN, "")).strip(),
        tokens=tokens,
        require_token_for_reads=require_token_for_reads,
        etcd_security=security,
        allow_no_token=allow_no_token,
        probe_timeout=DEFAULT_PROBE_TIMEOUT if probe_timeout is None else probe_timeout,
        probe_prompt=environ.get(ENV_PROBE_PROMPT, "") or DEFAULT_PROBE_PROMPT,
        rollout_tick=DEFAULT_ROLLOUT_TICK if rollout_tick is None else rollout_tick,
        leader_ttl=DEFAULT_LEADER_TTL if leader_ttl is None else leader_ttl,
        console_interval=DEFAULT_CONSOLE_INTERVAL if console_interval is None else console_interval,
        prompt_gate=_rate(environ.get(ENV_PROMPT_GATE, ""), DEFAULT_PROMPT_GATE),
        evaluation=evaluation,
        limits=limits if limits is not None else ServeLimits(),
        advertise_url=(advertise_url or environ.get(ENV_ADVERTISE_URL, "")).strip(),
    )


def _rate(text: str, default: float) -> float:
    if not text.strip():
        return default
    try:
        return float(text)
    except ValueError as exc:
        raise SettingsError(f"${ENV_PROMPT_GATE} is not a number: {text!r:.40}") from exc
