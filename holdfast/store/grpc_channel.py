"""The gRPC side of one etcd endpoint: channel options, TLS credentials and readiness.

Needs only ``grpc``: ``holdfast.store.etcd`` opens the channel and adds aetcd's stubs on top of
``Connection``. ``https://`` endpoints speak TLS (CA bundle, client certificate for mutual TLS,
server name override).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import grpc

from holdfast.store.security import EtcdSecurity
from holdfast.store.types import Endpoint

# etcd answers pings sent more often than its --grpc-keepalive-min-time (5 s) with GOAWAY, so 6 s
# plus a 3 s ack timeout is as quick as dead-peer detection gets against a default server.
CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.ping_timeout_ms", 3000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 128 << 20),
)
_READY = grpc.ChannelConnectivity.READY
_DOWN = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)


class TlsCredentials:
    """gRPC channel credentials built once from the PEM files (read at construction)."""

    def __init__(self, security: EtcdSecurity) -> None:
        ca, key, chain = security.read_pem()
        self.credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=chain
        )
        self.options: tuple[tuple[str, Any], ...] = (
            (("grpc.ssl_target_name_override", security.server_name),)
            if security.server_name
            else ()
        )


class Connection:
    """One endpoint's channel and the auth token this process holds for it.

    With etcd's auth on, each connection authenticates once and sends its token on every call;
    ``auth_lock`` keeps concurrent calls from authenticating at the same time.
    """

    def __init__(self, index: int, endpoint: Endpoint, channel: Any) -> None:
        self.index = index
        self.endpoint = endpoint
        self.channel: Any = channel
        self.token = ""
        self.auth_lock = asyncio.Lock()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("token", self.token),) if self.token else ()

    async def wait_ready(self, budget: float) -> bool:
        """True once the channel is connected; False at once if it is failing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        state = self.channel.get_state(try_to_connect=True)
        while state != _READY:
            remaining = deadline - loop.time()
            if state in _DOWN or remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = self.channel.get_state(try_to_connect=True)
        return True
