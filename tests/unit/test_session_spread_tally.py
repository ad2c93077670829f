"""The per-release session spread kept as sessions change equals a walk over the sessions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from holdfast.keyspace.session_spread import (
    SESSION_LATENCY_BOUNDS_MS,
    SESSION_TOKEN_BOUNDS,
    SessionSpread,
)
from holdfast.keyspace.signals import bucket_index
from sidecar.signals.book import Observation, SignalBook


def walked(sessions: dict[str, tuple[str, int, float]]) -> dict[str, SessionSpread]:
    """What the beat used to compute: every tracked session, walked."""
    out: dict[str, SessionSpread] = {}
    for release, tokens, latency in sessions.values():
        s = out.get(release) or SessionSpread(
            release=release, sessions=0,
            tokens=(0,) * (len(SESSION_TOKEN_BOUNDS) + 1),
            latency_ms=(0,) * (len(SESSION_LATENCY_BOUNDS_MS) + 1),
            tokens_sum=0, latency_ms_sum=0.0,
        )  # fmt: skip
        t, la = list(s.tokens), list(s.latency_ms)
        t[bucket_index(SESSION_TOKEN_BOUNDS, tokens)] += 1
        la[bucket_index(SESSION_LATENCY_BOUNDS_MS, latency)] += 1
        out[release] = SessionSpread(
            release=release, sessions=s.sessions + 1, tokens=tuple(t), latency_ms=tuple(la),
            tokens_sum=s.tokens_sum + tokens, latency_ms_sum=s.latency_ms_sum + latency,
        )  # fmt: skip
    return out


turns = st.lists(
    st.tuples(
        st.sampled_from([f"s{i}" for i in range(12)]),
        st.sampled_from(["r1", "r2", "r3"]),
        st.integers(min_value=0, max_value=200_000),
        st.floats(min_value=0.0, max_value=600.0, allow_nan=False),
    ),
    max_size=200,
)


@settings(max_examples=200, deadline=None)
@given(turns)
def test_the_tally_equals_a_walk_over_the_tracked_sessions(
    turns: list[tuple[str, str, int, float]],
) -> None:
    book = SignalBook(max_sessions=5)  # small: evictions happen
    model: dict[str, tuple[str, int, float]] = {}
    for session, release, tokens, latency_s in turns:
        obs = Observation(
            release=release, category="default", code="ok", latency_s=latency_s,
            session=session, answered=True, tokens_in=tokens, tokens_out=0,
        )  # fmt: skip
        book.record(obs)
        _, had, had_ms = model.pop(session, ("", 0, 0.0))
        model[session] = (release, had + tokens, had_ms + latency_s * 1000)
        while len(model) > 5:
            del model[next(iter(model))]
    expected = walked(model)
    got = {s.release: s for s in book.spreads()}
    assert got.keys() == expected.keys()
    for release, spread in got.items():
        want = expected[release]
        assert (spread.sessions, spread.tokens, spread.latency_ms, spread.tokens_sum) == (
            want.sessions, want.tokens, want.latency_ms, want.tokens_sum,
        )  # fmt: skip
        assert spread.latency_ms_sum == pytest.approx(want.latency_ms_sum, abs=0.01)
