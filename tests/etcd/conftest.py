"""Fixtures of the end-to-end tier: real processes around the shared real etcd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import Stack, start_stack


@pytest.fixture
def stack(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    """Fake LLM and configsvc; releases r1-r3 of the agent, r1 stable. Files may override it."""
    s = start_stack(tmp_path, etcd_env, [etcd_node.client_url])
    s.create_releases(("r1", "model-one"), ("r2", "model-two"), ("r3", "model-three"))
    s.set_stable("r1")
    yield s
    s.stop()
