"""MCP drift from the sidecar's note to configsvc's audit trail: the record and its id, the
health snapshot that carries it, the sidecar's log of drifts, and the audit that records each
one once (MemoryStore: the Store protocol in memory)."""

from __future__ import annotations

from typing import Any

import pytest

from configsvc.contracts.drift import DriftAudit
from configsvc.http.payloads import HistoryQuery
from configsvc.releases import ConfigService
from holdfast.keyspace import HealthSnapshot, Keyspace, RecordError
from holdfast.keyspace.drift import MAX_DRIFT_REPORTED, McpDrift, live_hash
from holdfast.store.memory import MemoryStore
from sidecar.mcp.drift import DriftLog

KS = Keyspace("dev")
DOCS = "http://127.0.0.1:9400/mcp"
LIVE = {"name": "search", "inputSchema": {"type": "object", "properties": {"lang": {}}}}


def drift(**over: Any) -> McpDrift:
    base: dict[str, Any] = {"backend": DOCS, "tool": "search", "version": "1.0.0",
                            "live": live_hash(LIVE), "detail": "inputSchema changed",
                            "toolset": "docs", "release": "r1", "at": 100.0}  # fmt: skip
    return McpDrift(**(base | over))


def snapshot(*drifts: McpDrift, sidecar: str = "sc-a", agent: str = "support") -> HealthSnapshot:
    return HealthSnapshot(sidecar_id=sidecar, agent=agent, at=1.0, started_at=0.0,
                          config_revision=3, mcp_drift=drifts)  # fmt: skip


def test_a_drift_is_one_id_per_backend_tool_version_and_live_entry() -> None:
    one = drift()
    assert one.ident.startswith("search@1.0.0.") and len(one.ident) <= 128
    assert KS.drift(one.ident).endswith(f"/drift/{one.ident}")
    assert KS.parse(KS.drift(one.ident)).kind == "drift"
    # who saw it, when, in which release: the same drift
    same = drift(release="r9", at=5.0, agent="other", sidecar_id="sc-b", detail="x")
    assert same.ident == one.ident
    for other in (drift(backend="http://127.0.0.1:9500/mcp"), drift(version="2.0.0"),
                  drift(live=live_hash(None)), drift(tool="fetch")):  # fmt: skip
        assert other.ident != one.ident
    assert live_hash(dict(reversed(list(LIVE.items())))) == live_hash(LIVE)  # key order
    assert McpDrift.decode(one.encode()) == one
    assert drift(detail="d" * 500).detail == "d" * 200
    for bad in ({"backend": "file:///etc"}, {"tool": "Bad Tool"}, {"version": "1"},
                {"live": "md5:0"}, {"sidecar_id": "a b"}, {"toolset": ""}):  # fmt: skip
        with pytest.raises(RecordError):
            drift(**bad)


def test_the_health_snapshot_carries_drifts_and_old_snapshots_read_none() -> None:
    snap = snapshot(drift(), drift(version="2.0.0"))
    back = HealthSnapshot.decode(snap.encode())
    assert back.mcp_drift == snap.mcp_drift
    assert HealthSnapshot.decode(snapshot().encode()).mcp_drift == ()
    too_many = snapshot(*(drift(at=float(i)) for i in range(MAX_DRIFT_REPORTED + 1)))
    with pytest.raises(RecordError, match="at most"):
        HealthSnapshot.decode(too_many.encode())


def test_the_sidecar_notes_each_drift_once_and_keeps_the_most_recent() -> None:
    log = DriftLog(recent=3, max_kept=5)
    first = log.note(toolset="docs", backend=DOCS, tool="search", version="1.0.0",
                     release="r1", live=LIVE, detail="inputSchema changed", now=1.0)  # fmt: skip
    assert first is not None and first.live == live_hash(LIVE)
    again = log.note(toolset="docs", backend=DOCS, tool="search", version="1.0.0", release="r2",
                     live=dict(LIVE), detail="inputSchema changed", now=2.0)  # fmt: skip
    assert again is None and log.noted == 1
    for i in range(4):
        log.note(toolset="docs", backend=DOCS, tool="search", version=f"1.0.{i + 1}",
                 release="r1", live=None, detail="gone", now=3.0 + i)  # fmt: skip
    assert [d.version for d in log.records()] == ["1.0.2", "1.0.3", "1.0.4"]
    assert [s["contract"] for s in log.status()] == ["search@1.0.2", "search@1.0.3",
                                                     "search@1.0.4"]  # fmt: skip
    # past max_kept the memory of what was noted starts afresh: noted once more, no more
    assert log.note(toolset="docs", backend=DOCS, tool="fetch", version="1.0.0", release="r1",
                    live=None, detail="gone", now=8.0) is not None  # fmt: skip
    assert log.note(toolset="docs", backend=DOCS, tool="search", version="1.0.0", release="r1",
                    live=LIVE, detail="inputSchema changed", now=9.0) is not None  # fmt: skip


async def history(service: ConfigService) -> list[Any]:
    _, items = await service.history(HistoryQuery(limit=50))
    return [i.to_json() for i in items if i.entry.action == "mcp.drift"]


async def test_the_audit_records_each_drift_once_across_sidecars_and_replicas() -> None:
    store = MemoryStore()
    service = ConfigService(store, KS, clock=lambda: 50.0)
    replica_a, replica_b = DriftAudit(service), DriftAudit(service)
    seen = drift()
    replica_a.observe(snapshot(seen, sidecar="sc-a"))
    replica_a.observe(snapshot(seen, sidecar="sc-b"))  # another sidecar, the same drift
    assert replica_a.pending == 1
    replica_b.observe(snapshot(seen, sidecar="sc-b", agent="billing"))
    assert await replica_a.flush() and await replica_b.flush()
    assert (replica_a.recorded, replica_b.recorded) == (1, 0)
    (entry,) = await history(service)
    assert entry["action"] == "mcp.drift" and entry["actor"] == "sidecar:sc-a"
    assert entry["agent"] == "support" and entry["target"] == f"drift/{seen.ident}"
    assert entry["reason"] == f"search@1.0.0 on {DOCS}: inputSchema changed"
    assert entry["extra"] == {"tool": "search", "version": "1.0.0", "backend": DOCS,
                              "toolset": "docs"}  # fmt: skip
    kv = await store.get(KS.drift(seen.ident))
    assert kv is not None and McpDrift.decode(kv.value).sidecar_id == "sc-a"
    replica_a.observe(snapshot(seen))  # known: not even read again
    assert replica_a.pending == 0

    moved = drift(live=live_hash(None), detail="the backend no longer lists the tool")
    store.unavailable = True  # etcd down: the drift waits, nothing is lost
    replica_b.observe(snapshot(seen, moved))  # b found `seen` in etcd: known there too
    assert replica_b.pending == 1 and not await replica_b.flush()
    assert replica_b.pending == 1
    store.unavailable = False
    assert await replica_b.flush() and replica_b.pending == 0
    assert [e["target"] for e in await history(service)] == [f"drift/{moved.ident}",
                                                             f"drift/{seen.ident}"]  # fmt: skip
