"""Session ids, sticky assignment, the pin table and pinned resolution: pure, no event loop."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import msgpack
import pytest
from prometheus_client import CollectorRegistry

from holdfast import bucketing
from holdfast.dialects import openai_chat
from holdfast.keyspace import Keyspace, Pin, Release, Route
from holdfast.keyspace.prompt import PromptVersion
from holdfast.store import Change, KeyValue
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.errors import InvalidRequest, NotConfigured
from sidecar.pins import persist as pin_persist
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.table import PinEntry, PinTable
from sidecar.routing.prompts import index_of, session_prompt
from sidecar.routing.resolve import assign, resolve
from sidecar.routing.session import SESSION_HEADER, session_id
from sidecar.settings.cli import load_settings
from sidecar.settings.model import DEFAULT_PIN_CREATE_TIMEOUT, ENV_PIN_CREATE_TIMEOUT, SettingsError

KS = Keyspace("dev")
AGENT = "support"


def pin(session: str, release: str = "r1", **over: object) -> Pin:
    values: dict[str, object] = {
        "agent": AGENT,
        "session": session,
        "release": release,
        "pinned_at": 100.0,
        "revision": 7,
        "touched_at": 100.0,
    }
    values.update(over)
    return Pin(**values)  # type: ignore[arg-type]


def kv(p: Pin, mod: int = 20, lease: int = 0) -> KeyValue:
    return KeyValue(KS.pin(p.agent, p.session), p.encode(), mod, mod, 1, lease)


def config(stable: str = "r1", canary: str = "", percent: float = 0.0) -> ConfigState:
    state = ConfigState(KS, AGENT)
    kvs = {}
    for name in ("r1", "r2", "r3"):
        r = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://127.0.0.1:1/v1")
        kvs[KS.release(AGENT, name)] = KeyValue(KS.release(AGENT, name), r.encode(), 1, 1, 1)
    route = Route(agent=AGENT, stable=stable, canary=canary, canary_percent=percent)
    kvs[KS.route(AGENT)] = KeyValue(KS.route(AGENT), route.encode(), 2, 2, 1)
    state.apply_reset(10, kvs, "etcd")
    return state


# -- session id ---------------------------------------------------------------------------


def hint(**body: object) -> str | None:
    """The session hint the chat dialect reads from a body (OpenAI's ``user``)."""
    return openai_chat.DIALECT.parse(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], **body}
    ).session_hint


def test_header_wins_over_user_field() -> None:
    assert session_id({SESSION_HEADER: "s-1"}, hint(user="u-2")) == "s-1"
    assert session_id({}, hint(user="alice.smith")) == "alice.smith"
    assert session_id({}, hint()) is None
    assert session_id({}, hint(user="")) is None
    assert session_id({}, hint(user=42)) is None


def test_bad_header_is_refused_naming_the_header() -> None:
    with pytest.raises(InvalidRequest) as err:
        session_id({SESSION_HEADER: "a/b"}, None)
    assert err.value.param == SESSION_HEADER
    with pytest.raises(InvalidRequest):
        session_id({SESSION_HEADER: ""}, None)


def test_user_outside_the_id_alphabet_is_hashed() -> None:
    user = "Jane Doe <jane@example.com>"
    expected = "u-" + hashlib.sha256(user.encode()).hexdigest()[:32]
    assert session_id({}, hint(user=user)) == expected
    assert session_id({}, hint(user="x" * 200)).startswith("u-")  # type: ignore[union-attr]


# -- assignment -----------------------------------------------------------------------------


def test_canary_fraction_matches_percent() -> None:
    route = Route(agent=AGENT, stable="r1", canary="r2", canary_percent=20)
    n = 20_000
    on_canary = sum(assign(route, AGENT, f"s-{i}") == "r2" for i in range(n))
    sd = math.sqrt(n * 0.2 * 0.8)
    assert abs(on_canary - n * 0.2) < 4 * sd, on_canary


def test_raising_percent_never_moves_a_canary_session() -> None:
    sessions = [f"sess-{i}" for i in range(5000)]
    previous: set[str] = set()
    for percent in (0, 1, 5, 25, 50, 99, 100):
        route = Route(agent=AGENT, stable="r1", canary="r2", canary_percent=percent)
        now = {s for s in sessions if assign(route, AGENT, s) == "r2"}
        assert previous <= now
        previous = now
    assert previous == set(sessions)


def test_no_canary_means_stable() -> None:
    route = Route(agent=AGENT, stable="r3")
    assert {assign(route, AGENT, f"s{i}") for i in range(100)} == {"r3"}


# -- resolution ------------------------------------------------------------------------------


def test_new_session_follows_the_hash_and_pinned_one_keeps_its_release() -> None:
    state = config("r1", canary="r2", percent=50)
    table = PinTable(KS, AGENT)
    sid = next(f"s{i}" for i in range(100) if bucketing.selected("canary", AGENT, f"s{i}", 50))
    new = resolve(state.current, AGENT, AGENT, sid, table)
    assert (new.release.name, new.kind, new.session) == ("r2", "new", sid)
    table.record_new(pin(sid, "r2"))
    moved = config("r3")  # the route moved everything: the pinned session must not follow
    again = resolve(moved.current, AGENT, AGENT, sid, table)
    assert (again.release.name, again.kind, again.migrated_from) == ("r2", "pinned", None)
    unpinned = resolve(moved.current, AGENT, AGENT, None, table)
    assert (unpinned.release.name, unpinned.kind) == ("r3", "unpinned")


def test_pin_to_an_unknown_release_is_503_never_a_reroute() -> None:
    table = PinTable(KS, AGENT)
    table.adopt(kv(pin("s1", "r9")))
    with pytest.raises(NotConfigured, match="r9"):
        resolve(config().current, AGENT, AGENT, "s1", table)


def test_migration_is_announced_once_per_sidecar() -> None:
    table = PinTable(KS, AGENT)
    migrated = pin("s1", "r3").migrated("r1", actor="ops", now=200.0)
    table.adopt(kv(migrated, mod=30))
    first = resolve(config().current, AGENT, AGENT, "s1", table)
    assert (first.release.name, first.migrated_from) == ("r1", "r3")
    table.mark_told("s1")
    assert table.get("s1").pending  # type: ignore[union-attr]  # notified=True must reach etcd
    assert resolve(config().current, AGENT, AGENT, "s1", table).migrated_from is None
    # Another sidecar's touch (still notified=False) arrives: this sidecar does not tell again.
    table.adopt(kv(migrated.touched(300.0), mod=31))
    assert resolve(config().current, AGENT, AGENT, "s1", table).migrated_from is None
    table.adopt(kv(dataclasses.replace(migrated, notified=True), mod=32))
    assert not table.get("s1").pending  # type: ignore[union-attr]


# -- the pin table ----------------------------------------------------------------------------


def test_watch_event_wins_over_a_local_pending_pin() -> None:
    table = PinTable(KS, AGENT)
    queued: list[str] = []
    table.on_pending(queued.append)
    table.record_new(pin("s1", "r1"))
    assert queued == ["s1"]
    table.apply_changes([Change("put", KS.pin(AGENT, "s1"), pin("s1", "r2").encode(), 40)])
    entry = table.get("s1")
    assert entry is not None and entry.pin.release == "r2"
    assert (entry.mod_revision, entry.pending) == (40, False)
    table.apply_changes([Change("delete", KS.pin(AGENT, "s1"), b"", 41)])
    assert table.get("s1") is None


def test_bad_record_is_rejected_and_previous_kept() -> None:
    table = PinTable(KS, AGENT)
    table.adopt(kv(pin("s1", "r1")))
    key = KS.pin(AGENT, "s1")
    assert not table.adopt(KeyValue(key, b"\x00garbage", 50, 1, 2))
    assert not table.adopt(KeyValue(key, pin("other", "r2").encode(), 51, 1, 3))  # wrong key
    assert table.get("s1").pin.release == "r1"  # type: ignore[union-attr]
    assert table.rejected == 2
    table.apply_changes([Change("put", KS.route(AGENT), b"not a pin", 52)])  # not ours: ignored
    assert len(table) == 1


def test_written_result_is_kept_unless_etcd_moved_past_it() -> None:
    table = PinTable(KS, AGENT)
    table.record_new(pin("s1"))
    table.written("s1", pin("s1", touched_at=101.0), 0, 60, 7)
    entry = table.get("s1")
    assert entry is not None and (entry.mod_revision, entry.lease, entry.pending) == (60, 7, False)
    table.adopt(kv(pin("s1").migrated("r2", actor="ops", now=1.0), mod=70))
    table.written("s1", pin("s1", touched_at=102.0), 60, 65, 7)  # a late reply: ignored
    assert table.get("s1").pin.release == "r2"  # type: ignore[union-attr]


def test_reset_replaces_confirmed_pins_and_keeps_pending_local_ones() -> None:
    table = PinTable(KS, AGENT)
    queued: list[str] = []
    table.load(
        [
            PinEntry(pin=pin("gone"), mod_revision=5),  # expired in etcd meanwhile
            PinEntry(pin=pin("offline", "r2"), pending=True),  # pinned during an outage
            PinEntry(pin=pin("both", "r1"), pending=True),
        ]
    )
    table.on_pending(queued.append)
    table.apply_reset({kv(pin("both", "r3")).key: kv(pin("both", "r3"), mod=80)})
    assert table.get("gone") is None
    offline = table.get("offline")
    assert offline is not None and offline.pending and offline.mod_revision == 0
    assert table.get("both").pin.release == "r3"  # type: ignore[union-attr]
    assert queued == ["offline"]


# -- settings and the saved table --------------------------------------------------------------


def test_pin_settings_parse_and_validate() -> None:
    s = load_settings(["--agent", AGENT, "--pin-ttl", "5", "--max-pending-pins", "10"], {})
    assert (s.pin_ttl, s.max_pending_pins) == (5, 10)
    assert load_settings(["--agent", AGENT], {}).pin_ttl == 86400
    with pytest.raises(SettingsError, match="--pin-ttl"):
        load_settings(["--agent", AGENT, "--pin-ttl", "1"], {})
    with pytest.raises(SettingsError, match="--max-pending-pins"):
        load_settings(["--agent", AGENT, "--max-pending-pins", "0"], {})


def test_saved_pins_round_trip_and_garbage_is_refused() -> None:
    entries = [
        PinEntry(pin=pin("s1"), mod_revision=3, lease=9, told=0.0, pending=False),
        PinEntry(pin=pin("s2", "r2"), pending=True, told=12.5),
    ]
    rows = [(e.pin, e.mod_revision, e.lease, e.told, e.pending) for e in entries]
    assert pin_persist.decode(pin_persist.encode(rows)) == entries
    for junk in (b"", b"\xc1", msgpack.packb({"format": 99}), msgpack.packb({"format": 1})):
        with pytest.raises(ValueError):
            pin_persist.decode(junk)


# -- dropped writes, claimed pins, concurrent local changes ----------------------------------


def test_a_dropped_create_stays_owed_and_a_dropped_refresh_does_not() -> None:
    table = PinTable(KS, AGENT)
    table.record_new(pin("fresh"))
    assert table.give_up("fresh") is True  # its only record: the writer parks and retries it
    assert table.get("fresh").pending  # type: ignore[union-attr]
    table.adopt(kv(pin("old"), mod=30))
    table.mark_pending("old")  # a refresh
    assert table.give_up("old") is False
    assert not table.get("old").pending  # type: ignore[union-attr]  # the next use asks again
    told = pin("told", "r3").migrated("r1", actor="ops", now=200.0)
    table.adopt(kv(told, mod=31))
    table.mark_told("told")
    assert table.give_up("told") is True  # the agent was told: etcd must learn it
    assert table.give_up("nobody") is False


def test_a_claimed_pin_never_replaces_a_later_watch_event() -> None:
    table = PinTable(KS, AGENT)
    migrated = pin("s1").migrated("r2", actor="ops", now=1.0)
    table.adopt(kv(migrated, mod=50))  # the watch was faster than the create's reply
    table.record_claimed(pin("s1"), 45, 9)
    assert table.get("s1").pin.release == "r2"  # type: ignore[union-attr]
    entry = table.record_claimed(pin("s2"), 60, 9)
    assert (entry.mod_revision, entry.lease, entry.pending) == (60, 9, False)
    # a pin read by a get (a lost create) is older than what the watch brought meanwhile
    assert table.adopt(kv(pin("s1"), mod=48), newer_only=True)
    assert table.get("s1").pin.release == "r2"  # type: ignore[union-attr]
    assert table.adopt(kv(pin("s1", "r3"), mod=55), newer_only=True)
    assert table.get("s1").pin.release == "r3"  # type: ignore[union-attr]


def test_a_write_reply_keeps_a_local_change_made_while_it_was_in_flight() -> None:
    table = PinTable(KS, AGENT)
    queued: list[str] = []
    table.on_pending(queued.append)
    table.adopt(kv(pin("s1"), mod=20))
    source = table.get("s1").pin  # type: ignore[union-attr]
    table.record_prompts("s1", {"support": "1"})  # during the refresh's round trip
    table.written("s1", source.touched(150.0), 20, 25, 7, source)
    entry = table.get("s1")
    assert entry is not None and entry.pin.prompts == {"support": "1"}
    assert (entry.mod_revision, entry.lease, entry.pending) == (25, 7, True)
    assert queued == ["s1"]  # still on its way to etcd, now as an update of revision 25


# -- prompt versions recorded at first use ----------------------------------------------------


def prompts_config(active: str | None, *, follows: str = "p1") -> ConfigState:
    """Releases r1 (no prompts) and p1 (prompt "support" as "active"); versions 1 and 2."""
    state = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    kvs = {}
    for name, prompts in (("r1", {}), ("p1", {"support": "active"})):
        r = Release(
            agent=AGENT, name=name, model=f"m-{name}", base_url="http://127.0.0.1:1/v1",
            prompts=prompts,
        )  # fmt: skip
        kvs[KS.release(AGENT, name)] = KeyValue(KS.release(AGENT, name), r.encode(), 1, 1, 1)
    for version in ("1", "2"):
        status = "active" if version == active else "draft"
        p = PromptVersion(name="support", version=version, text=f"v{version}", status=status)  # type: ignore[arg-type]
        key = KS.prompt("support", version)
        kvs[key] = KeyValue(key, p.encode(), 3, 3, 1)
    route = Route(agent=AGENT, stable=follows)
    kvs[KS.route(AGENT)] = KeyValue(KS.route(AGENT), route.encode(), 2, 2, 1)
    state.apply_reset(10, kvs, "etcd")
    return state


def served_prompt(pinning: Pinning, state: ConfigState, session: str) -> str:
    resolved = pinning.resolve(state.current, AGENT, session)
    entry = pinning.table.get(session)
    pinned = entry.pin.prompts if entry is not None else None
    return session_prompt(index_of(state.current), resolved.release, "support", pinned).version


def test_a_prompt_first_used_after_the_first_turn_keeps_its_version() -> None:
    pinning = Pinning(AGENT, PinTable(KS, AGENT), PinMetrics(CollectorRegistry(), AGENT), ttl=60)
    none_active = prompts_config(None)
    pinning.resolve(none_active.current, AGENT, "early")  # nothing active yet: nothing pinned
    assert pinning.table.get("early").pin.prompts == {}  # type: ignore[union-attr]
    assert served_prompt(pinning, prompts_config("1"), "early") == "1"
    assert pinning.table.get("early").pin.prompts == {"support": "1"}  # type: ignore[union-attr]
    assert served_prompt(pinning, prompts_config("2"), "early") == "1"  # v2 active: kept
    assert served_prompt(pinning, prompts_config("2"), "late") == "2"  # new sessions get v2


def test_a_session_migrated_to_a_prompt_following_release_keeps_the_first_version() -> None:
    pinning = Pinning(AGENT, PinTable(KS, AGENT), PinMetrics(CollectorRegistry(), AGENT), ttl=60)
    on_r1 = prompts_config("1", follows="r1")
    pinning.resolve(on_r1.current, AGENT, "mover")
    assert pinning.table.get("mover").pin.prompts == {}  # type: ignore[union-attr]
    moved = pin("mover", "r1").migrated("p1", actor="ops", now=300.0)
    pinning.table.adopt(kv(moved, mod=40))  # `pins migrate` arrives through the watch
    resolved = pinning.resolve(on_r1.current, AGENT, "mover")
    assert (resolved.release.name, resolved.migrated_from) == ("p1", "r1")
    entry = pinning.table.get("mover")
    assert entry is not None and entry.pin.prompts == {"support": "1"} and entry.pending
    assert served_prompt(pinning, prompts_config("2", follows="r1"), "mover") == "1"


# -- the first-turn timeout setting -----------------------------------------------------------


def test_pin_create_timeout_flag_env_and_bounds() -> None:
    assert load_settings(["--agent", AGENT], {}).pin_create_timeout == DEFAULT_PIN_CREATE_TIMEOUT
    env = {ENV_PIN_CREATE_TIMEOUT: "0.5"}
    assert load_settings(["--agent", AGENT], env).pin_create_timeout == 0.5
    flag = ["--agent", AGENT, "--pin-create-timeout", "0"]
    assert load_settings(flag, env).pin_create_timeout == 0.0  # the flag wins; 0 turns it off
    for bad in ("-1", "11", "nan"):
        with pytest.raises(SettingsError, match="--pin-create-timeout"):
            load_settings(["--agent", AGENT, "--pin-create-timeout", bad], {})
    with pytest.raises(SettingsError, match=ENV_PIN_CREATE_TIMEOUT):
        load_settings(["--agent", AGENT], {ENV_PIN_CREATE_TIMEOUT: "soon"})
