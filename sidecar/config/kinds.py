"""The environment-wide record kinds the sidecar watches, each with its decoder.

Flags, tool contracts, budgets and prompts live under ``/holdfast/<env>/<kind>/`` for every
agent; a kind listed here is mirrored from etcd, validated on arrival (a bad record is refused
and the previous good one kept), persisted in the last-known-good snapshot, and reachable on the
request path as ``snapshot.of_kind(kind)``. Each feature adds its one line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from holdfast.keyspace.budget import decode_budget
from holdfast.keyspace.contract import decode_contract
from holdfast.keyspace.flag import decode_flag
from holdfast.keyspace.price import decode_prices
from holdfast.keyspace.prompt import decode_prompt
from sidecar.config.state import KindDecoder

CONFIG_KINDS: Final[Mapping[str, KindDecoder]] = {
    "budgets": decode_budget,
    "contracts": decode_contract,
    "flags": decode_flag,
    "prices": decode_prices,
    "prompts": decode_prompt,
}
