"""Sidecar config state, routing, staleness and settings: pure, no event loop."""

from __future__ import annotations

from pathlib import Path

import pytest

from holdfast.keyspace import Keyspace, RecordError, Release, Route
from holdfast.store import Change, KeyValue
from sidecar.config import persist
from sidecar.config.state import ConfigState
from sidecar.errors import NotConfigured, UnknownModel
from sidecar.ops.endpoints import staleness
from sidecar.routing.resolve import resolve
from sidecar.settings.cli import load_settings
from sidecar.settings.model import SettingsError

KS = Keyspace("dev")
AGENT = "support"


def rel(name: str, model: str = "m-1", agent: str = AGENT) -> KeyValue:
    r = Release(agent=agent, name=name, model=model, base_url="http://127.0.0.1:1/v1")
    return KeyValue(KS.release(agent, name), r.encode(), 1, 1, 1)


def route(stable: str, aliases: tuple[str, ...] = ()) -> KeyValue:
    r = Route(agent=AGENT, stable=stable, aliases=aliases)
    return KeyValue(KS.route(AGENT), r.encode(), 2, 2, 1)


def state_with(*kvs: KeyValue, revision: int = 10) -> ConfigState:
    state = ConfigState(KS, AGENT)
    state.apply_reset(revision, {kv.key: kv for kv in kvs}, "etcd")
    return state


def test_resolves_agent_name_and_aliases_to_stable_release() -> None:
    state = state_with(rel("r1", "m-1"), rel("r2", "m-2"), route("r2", ("helper",)))
    for name in (AGENT, "helper"):
        resolved = resolve(state.current, AGENT, name)
        assert (resolved.release.name, resolved.release.model, resolved.revision) == (
            "r2",
            "m-2",
            10,
        )


def test_unknown_model_lists_known_names() -> None:
    state = state_with(rel("r1"), route("r1", ("helper",)))
    with pytest.raises(UnknownModel, match="support, helper"):
        resolve(state.current, AGENT, "gpt-4o")


def test_not_configured_cases() -> None:
    with pytest.raises(NotConfigured, match="not loaded"):
        resolve(None, AGENT, AGENT)
    with pytest.raises(NotConfigured, match="no route"):
        resolve(state_with(rel("r1")).current, AGENT, AGENT)
    with pytest.raises(NotConfigured, match="does not know"):
        resolve(state_with(route("ghost")).current, AGENT, AGENT)


def test_delta_switches_pointer_and_ignores_other_agents() -> None:
    state = state_with(rel("r1"), rel("r2", "m-2"), route("r1"))
    other = rel("x1", agent="billing")
    state.apply_changes(
        11,
        [
            Change("put", route("r2").key, route("r2").value, 11),
            Change("put", other.key, other.value, 11),
        ],
    )
    assert state.current is not None
    assert state.current.revision == 11
    assert resolve(state.current, AGENT, AGENT).release.name == "r2"
    assert all(
        k.startswith(KS.releases_of(AGENT)) or k == KS.route(AGENT) for k in state.current.raw
    )


def test_poison_record_is_refused_and_previous_value_kept() -> None:
    state = state_with(rel("r1"), route("r1"))
    state.apply_changes(12, [Change("put", KS.route(AGENT), b"\xc1garbage", 12)])
    assert state.current is not None
    assert state.current.route is not None and state.current.route.stable == "r1"
    assert state.rejections[-1].key == KS.route(AGENT)
    assert "msgpack" in state.rejections[-1].reason
    # A reset carrying the same poison keeps the good value too.
    state.apply_reset(13, {KS.route(AGENT): KeyValue(KS.route(AGENT), b"junk", 13, 2, 2)}, "etcd")
    assert state.current.route is not None and state.current.route.stable == "r1"


def test_record_whose_body_disagrees_with_its_key_is_refused() -> None:
    wrong = rel("r1")
    state = state_with(KeyValue(KS.release(AGENT, "r9"), wrong.value, 3, 3, 1))
    assert state.current is not None and state.current.releases == {}
    assert "names support/r1" in state.rejections[-1].reason


def test_delete_removes_release() -> None:
    state = state_with(rel("r1"), route("r1"))
    state.apply_changes(14, [Change("delete", KS.route(AGENT), b"", 14)])
    assert state.current is not None and state.current.route is None


def test_snapshot_file_round_trip_and_torn_files(tmp_path: Path) -> None:
    kvs = {kv.key: kv for kv in (rel("r1"), route("r1"))}
    path = persist.snapshot_path(tmp_path, "dev", AGENT)
    persist.write_atomically(path, persist.encode(42, kvs))
    saved = persist.load(path)
    assert saved is not None and saved.revision == 42 and saved.kvs == kvs
    path.write_bytes(persist.encode(42, kvs)[:-7])
    assert persist.load(path) is None
    assert persist.load(tmp_path / "missing") is None


def test_staleness() -> None:
    assert staleness(connected=True, last_contact=5.0, now=100.0, stale_after=10).stale is False
    lagging = staleness(connected=False, last_contact=95.0, now=100.0, stale_after=10)
    assert (lagging.stale, lagging.age) == (False, 5.0)
    assert staleness(connected=False, last_contact=80.0, now=100.0, stale_after=10).stale
    assert staleness(connected=False, last_contact=None, now=1.0, stale_after=10).stale


def test_settings_defaults_and_refusals() -> None:
    s = load_settings(["--agent", "support"], {})
    assert (s.listen_host, s.listen_port, s.env) == ("127.0.0.1", 8787, "dev")
    assert s.etcd_endpoints == ("http://127.0.0.1:2379",)
    s = load_settings(["--agent", "a"], {"HOLDFAST_ETCD": "http://h1:1, http://h2:2"})
    assert s.etcd_endpoints == ("http://h1:1", "http://h2:2")
    with pytest.raises(SettingsError, match="not loopback"):
        load_settings(["--agent", "a", "--listen", "0.0.0.0:8787"], {})
    assert (
        load_settings(
            ["--agent", "a", "--listen", "0.0.0.0:1", "--allow-non-loopback"], {}
        ).listen_host
        == "0.0.0.0"
    )
    with pytest.raises(SettingsError, match="invalid agent"):
        load_settings(["--agent", "Bad/Name"], {})
    with pytest.raises(SettingsError, match="HOST:PORT"):
        load_settings(["--agent", "a", "--listen", "8787"], {})


def _flag_decoder(parts: tuple[str, ...], value: bytes) -> object:
    if not value.startswith(b"ok:"):
        raise RecordError("not an ok record")
    return (parts, value.decode())


def test_environment_wide_kinds_are_decoded_kept_and_refused_like_the_rest() -> None:
    state = ConfigState(KS, AGENT, kinds={"flags": _flag_decoder})
    flag = KeyValue(KS.flag("dark-mode"), b"ok:on", 3, 3, 1)
    budget = KeyValue(KS.budget("global"), b"ok:1", 4, 4, 1)  # a kind nobody registered
    state.apply_reset(10, {kv.key: kv for kv in (rel("r1"), route("r1"), flag, budget)}, "etcd")
    snapshot = state.current
    assert snapshot is not None
    assert snapshot.of_kind("flags") == {"dark-mode": (("dark-mode",), "ok:on")}
    assert snapshot.of_kind("budgets") == {} and KS.budget("global") not in snapshot.raw
    # a bad update is refused; the previous good value stays, and the snapshot keeps the raw kv
    state.apply_changes(11, [Change("put", KS.flag("dark-mode"), b"garbage", 11, 3, 2)])
    assert state.current is not None
    assert state.current.of_kind("flags")["dark-mode"] == (("dark-mode",), "ok:on")
    assert state.rejections[-1].key == KS.flag("dark-mode")
    state.apply_changes(12, [Change("delete", KS.flag("dark-mode"), b"", 12)])
    assert state.current.of_kind("flags") == {}
