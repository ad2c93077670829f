"""Health snapshot assembly, lease TTL and the shadow/health settings (pure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from holdfast.keyspace import HealthSnapshot, ShadowStats
from sidecar.ops.health import HealthSources, build_snapshot, lease_ttl
from sidecar.settings.cli import load_settings
from sidecar.settings.model import SettingsError, SidecarSettings


def test_snapshot_is_built_from_its_sources_and_round_trips() -> None:
    stats = (ShadowStats(primary="r1", shadow="r2", epoch=5.0, samples=3, similarity_sum=2.5),)
    sources = HealthSources(config_revision=lambda: 42, pins=lambda: (7, 2), shadow=lambda: stats)
    snap = build_snapshot(sources, sidecar_id="host-1", agent="support", started_at=1.0, now=9.0)
    assert HealthSnapshot.decode(snap.encode()) == snap
    assert (snap.config_revision, snap.pins_cached, snap.pins_pending) == (42, 7, 2)
    assert snap.shadow == stats and (snap.started_at, snap.at) == (1.0, 9.0)
    bare = build_snapshot(
        HealthSources(config_revision=lambda: 0), sidecar_id="h", agent="a", started_at=0, now=0
    )
    assert (bare.pins_cached, bare.pins_pending, bare.shadow) == (0, 0, ())


def test_snapshot_carries_the_traffic_the_sidecar_served_and_reads_it_tolerantly() -> None:
    traffic = {"openai.chat": 9, "openai.chat:n": 2, "anthropic.messages:tools": 1}
    sources = HealthSources(config_revision=lambda: 1, traffic=lambda: dict(traffic))
    snap = build_snapshot(sources, sidecar_id="h", agent="a", started_at=0, now=1)
    assert HealthSnapshot.decode(snap.encode()).traffic == traffic
    # a newer sidecar's or a broken one's counters are left out, never a refused snapshot
    odd: dict[str, Any] = {**traffic, "x" * 81: 1, "negative": -1, "float": 1.5, "bool": True}
    decoded = HealthSnapshot.decode(dataclasses.replace(snap, traffic=odd).encode())
    assert decoded.traffic == traffic
    many = {f"d{i}": 1 for i in range(1000)}
    assert (
        len(HealthSnapshot.decode(dataclasses.replace(snap, traffic=many).encode()).traffic) == 256
    )
    # a snapshot from before traffic was counted has none
    old = dataclasses.replace(snap, traffic={})
    assert HealthSnapshot.decode(old.encode()).traffic == {}


def test_lease_outlives_three_beats_and_never_drops_below_two_seconds() -> None:
    assert lease_ttl(5.0) == 15
    assert lease_ttl(0.5) == 2
    assert lease_ttl(1.1) == 4


def test_shadow_and_health_settings() -> None:
    s = load_settings(
        [
            "--agent",
            "support",
            "--shadow-max-concurrency",
            "2",
            "--shadow-tokens-per-minute",
            "500",
            "--health-interval",
            "1.5",
        ],
        {},
    )
    assert (s.shadow_max_concurrency, s.shadow_tokens_per_minute, s.health_interval) == (
        2,
        500,
        1.5,
    )
    defaults = SidecarSettings(agent="support")
    assert (defaults.shadow_max_concurrency, defaults.shadow_tokens_per_minute) == (4, 60_000)
    assert defaults.health_interval == 2.0
    for bad in (
        {"shadow_max_concurrency": 0},
        {"shadow_tokens_per_minute": 0},
        {"health_interval": 0.0},
        {"health_interval": 10_000.0},
    ):
        with pytest.raises(SettingsError):
            SidecarSettings(agent="support", **bad)
