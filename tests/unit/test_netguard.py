"""SSRF policy: which provider and tool backend hosts/addresses may be reached."""

from __future__ import annotations

import pytest

from holdfast.net.guard import MAX_CACHED_URLS, HostPolicy, HostRefused, policy_from

DEFAULT = HostPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/v1",
        "http://localhost:9000/v1",
        "https://api.openai.com/v1",
        "http://[::1]:8000/v1",
        "https://8.8.8.8/v1",
    ],
)
def test_default_allows_loopback_and_public(url: str) -> None:
    DEFAULT.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/v1",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./x",
        "http://[::ffff:169.254.169.254]/",
        "http://10.0.0.5/v1",
        "http://192.168.1.1/v1",
        "http://0.0.0.0:80/",
        "http://100.100.100.200/",
        "http:///nohost",
    ],
)
def test_default_refuses_link_local_metadata_private(url: str) -> None:
    with pytest.raises(HostRefused):
        DEFAULT.check_url(url)


def test_resolved_addresses_checked_for_names() -> None:
    DEFAULT.check_address("api.example.com", "93.184.216.34")
    DEFAULT.check_address("localhost", "127.0.0.1")
    for bad in ("169.254.169.254", "fe80::1", "10.1.2.3", "::ffff:169.254.169.254"):
        with pytest.raises(HostRefused):
            DEFAULT.check_address("rebind.example.com", bad)


def test_patterns_replace_default() -> None:
    policy = policy_from(["api.openai.com", "*.openai.azure.com", "10.0.0.0/8"])
    policy.check_url("https://api.openai.com/v1")
    policy.check_url("https://east.openai.azure.com/v1")
    policy.check_url("http://10.2.3.4:8000/v1")
    for url in ("https://evil.com/", "https://openai.azure.com/", "http://127.0.0.1/"):
        with pytest.raises(HostRefused):
            policy.check_url(url)
    # An explicitly named host may resolve to private addresses, never to link-local ones.
    policy.check_address("api.openai.com", "172.16.0.9")
    with pytest.raises(HostRefused):
        policy.check_address("api.openai.com", "169.254.169.254")


def test_forbidden_only_when_named_explicitly() -> None:
    with pytest.raises(HostRefused):
        policy_from(["*"]).check_url("http://169.254.169.254/")
    policy_from(["169.254.169.254/32"]).check_url("http://169.254.169.254/")
    policy_from(["metadata.google.internal"]).check_url("http://metadata.google.internal/")


def test_loopback_pattern() -> None:
    policy = policy_from(["loopback"])
    policy.check_url("http://localhost:1/")
    policy.check_url("http://127.0.0.2:1/")
    with pytest.raises(HostRefused):
        policy.check_url("https://api.openai.com/")


@pytest.mark.parametrize("bad", ["a b", "http://x", "10.0.0.0/33", "*.*", "", "ä" * 300])
def test_bad_patterns_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        policy_from([bad])


def test_url_verdicts_are_remembered_and_bounded() -> None:
    policy = HostPolicy()
    for _ in range(2):  # the second answer comes from the cache, and is the same
        policy.check_url("http://127.0.0.1:9900/v1/chat/completions")
        with pytest.raises(HostRefused, match="metadata"):
            policy.check_url("http://169.254.169.254/latest")
        with pytest.raises(HostRefused, match="cannot be parsed"):
            policy.check_url("http://[::1/v1")
    for i in range(MAX_CACHED_URLS + 5):
        policy.check_url(f"http://127.0.0.1:{1000 + i}/v1")
    assert len(policy._verdicts) <= MAX_CACHED_URLS
