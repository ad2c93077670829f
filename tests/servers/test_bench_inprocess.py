"""The in-process benches measure a real relay: each path's child serves its answers whole (a
stream short of its events fails the child) and reports its CPU for the count it was given."""

from __future__ import annotations

import pytest

from bench import callgrind, sidecar_inprocess, sidecar_sse


@pytest.mark.parametrize("path", ["bare", "sidecar"])
def test_a_stream_is_relayed_whole_by_each_path(path: str) -> None:
    result = callgrind.run(sidecar_sse._cmd(path, 2, 1), sidecar_inprocess.child_env(path))
    assert result["path"] == path and result["requests"] == 2 and result["cpu_s"] > 0


def test_the_sidecar_answers_the_whole_request_bench() -> None:
    cmd = sidecar_inprocess._cmd("sidecar", 5, 1)
    result = callgrind.run(cmd, sidecar_inprocess.child_env("sidecar"))
    assert result["path"] == "sidecar" and result["requests"] == 5 and result["cpu_s"] > 0
