"""Token roles, the tokens file, the endpoint table, etcd security settings and the role layout."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from configsvc.errors import Forbidden, Unauthorized, spec_for
from configsvc.http.access import ADMIN_MUTATIONS, OPERATOR_MUTATIONS, Role, required_role
from configsvc.http.auth import Authorizer
from configsvc.http.tokens import TokensFileError, load_tokens_file, parse_tokens
from configsvc.server.settings import load_serve_settings
from holdfast.etcdauth import roles as etcd_roles
from holdfast.store.security import EtcdSecurity, SecurityError, load_etcd_security
from sidecar.settings.model import SettingsError as SidecarSettingsError
from sidecar.settings.model import SidecarSettings

REMOTE = "10.0.0.9"


def line(subject: str, role: str, token: str) -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return json.dumps({"subject": subject, "role": role, "sha256": digest})


def authorizer(**kw: bool) -> Authorizer:
    text = "\n".join(
        ["# team tokens", line("vic", "viewer", "tv"), line("olga", "operator", "to"), ""]
    )
    return Authorizer("legacy", parse_tokens(text), **kw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Holdfast-Actor": "pat"}


def test_roles_gate_each_endpoint_and_name_the_subject() -> None:
    auth = authorizer()
    stable = required_role("PUT", "/v1/agents/{agent}/route/stable")
    create = required_role("POST", "/v1/agents/{agent}/releases")
    assert (stable, create) == (Role.OPERATOR, Role.ADMIN)
    who = auth.check(mutation=True, remote=REMOTE, headers=bearer("to"), required=stable)
    assert auth.actor(bearer("to"), who) == "olga:pat"
    with pytest.raises(Forbidden, match="role operator; this needs admin"):
        auth.check(mutation=True, remote=REMOTE, headers=bearer("to"), required=create)
    with pytest.raises(Forbidden, match="viewer"):
        auth.check(mutation=True, remote=REMOTE, headers=bearer("tv"), required=stable)
    legacy = auth.check(mutation=True, remote=REMOTE, headers=bearer("legacy"), required=create)
    assert auth.actor(bearer("legacy"), legacy) == "token:pat"  # backward compatible
    assert auth.check(mutation=False, remote=REMOTE, headers=bearer("tv")).role == Role.VIEWER
    assert spec_for(Forbidden("x")).status == 403 and spec_for(Forbidden("x")).code == "forbidden"


def test_unknown_or_missing_tokens_are_401_and_loopback_reads_stay_open() -> None:
    auth = authorizer()
    for headers in ({}, bearer("nope"), bearer("x" * 10_000), {"Authorization": "Basic tv"}):
        with pytest.raises(Unauthorized):
            auth.check(mutation=True, remote="127.0.0.1", headers=headers)
    with pytest.raises(Unauthorized):
        auth.check(mutation=False, remote=REMOTE, headers={})
    assert auth.check(mutation=False, remote="127.0.0.1", headers={}).role == Role.VIEWER
    strict = authorizer(require_token_for_reads=True)
    with pytest.raises(Unauthorized, match="reads need the"):
        strict.check(mutation=False, remote="127.0.0.1", headers={})
    assert "legacy" not in repr(auth) + repr(auth.book)


def test_no_token_mode_records_unauthenticated() -> None:
    auth = Authorizer("")
    who = auth.check(mutation=True, remote="127.0.0.1", headers={})
    assert auth.actor({"X-Holdfast-Actor": "me"}, who) == "unauthenticated:me"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not json", "line 1: not a JSON object"),
        ('{"subject": ' + "[" * 5000, "line 1: not a JSON object"),  # never a RecursionError
        ('{"subject": ' + "9" * 5000 + "}", "line 1: not a JSON object"),  # nor int overflow
        ('{"subject": "a", "role": "admin"}', "missing field"),
        ('{"subject": "a", "role": "admin", "sha256": "ab", "x": 1}', "unknown field"),
        (line("a", "root", "t"), "unknown role"),
        ('{"subject": "a", "role": "admin", "sha256": "AB"}', "64 lowercase hex"),
        (line("a b", "admin", "t"), "subject must be"),
        (line("a", "admin", "t") + "\n" + line("a", "viewer", "u"), "subject appears twice"),
        (line("a", "admin", "t") + "\n" + line("b", "viewer", "t"), "same token hash"),
    ],
)
def test_tokens_file_refuses_bad_lines(text: str, error: str) -> None:
    with pytest.raises(TokensFileError, match=error):
        parse_tokens(text)


def test_tokens_file_loading(tmp_path: Path) -> None:
    path = tmp_path / "tokens.jsonl"
    path.write_text(line("ops", "operator", "secret-canary") + "\n")
    assert [e.subject for e in load_tokens_file(path)] == ["ops"]
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(TokensFileError, match="no token lines"):
        load_tokens_file(tmp_path / "empty")
    with pytest.raises(TokensFileError, match="cannot read"):
        load_tokens_file(tmp_path / "missing")
    settings = load_serve_settings(
        listen=None, etcd=None, env=None, token="", allow_no_token=False,
        environ={"HOLDFAST_TOKENS_FILE": str(path)},
    )  # fmt: skip
    assert settings.auth_required and "secret-canary" not in repr(settings)


def test_token_lookup_compares_every_entry_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every presented token is hashed, then compared with every entry's hash through
    hmac.compare_digest, whether it matches the first entry, the last or none: neither the
    number of comparisons nor their operands (always two 32-byte digests, never the token
    itself) depend on which token, if any, matched."""
    tokens = [f"token-{i}-" + "x" * (i * 7) for i in range(5)]  # different lengths on purpose
    text = "\n".join(line(f"s{i}", "viewer", t) for i, t in enumerate(tokens))
    auth = Authorizer("legacy-token", parse_tokens(text))
    digests = {hashlib.sha256(t.encode()).digest() for t in [*tokens, "legacy-token"]}
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("configsvc.http.tokens.hmac.compare_digest", spy)
    for presented, subject in [
        (tokens[0], "s0"), (tokens[-1], "s4"), ("legacy-token", "token"),
        ("token-1-", None), ("wrong", None), ("y" * 4000, None),
    ]:  # fmt: skip
        calls.clear()
        identity = auth.book.identify(presented)
        assert (identity.subject if identity else None) == subject
        assert len(calls) == len(digests), presented[:20]
        assert {b for _, b in calls} == digests  # every entry, each once
        assert {a for a, _ in calls} == {hashlib.sha256(presented.encode()).digest()}
        assert all(len(a) == len(b) == 32 for a, b in calls)
    calls.clear()
    with pytest.raises(Unauthorized):
        auth.check(mutation=True, remote=REMOTE, headers=bearer("nope"))
    assert len(calls) == len(digests)  # the HTTP path goes through the same comparison


def test_every_mutation_in_the_table_is_a_mutation() -> None:
    for method, _ in [*OPERATOR_MUTATIONS, *ADMIN_MUTATIONS]:
        assert method in ("POST", "PUT", "DELETE", "PATCH")
    assert not set(OPERATOR_MUTATIONS) & ADMIN_MUTATIONS
    assert required_role("POST", "/v1/some/new/endpoint") == Role.ADMIN
    assert required_role("GET", "/v1/agents/{agent}/route") == Role.VIEWER


def test_etcd_security_settings(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    sec = load_etcd_security(
        ca=str(pem), cert=None, key=None, user="u", server_name=None,
        environ={"HOLDFAST_ETCD_PASSWORD": "pw-canary"},
    )  # fmt: skip
    assert sec.auth and sec.tls_files and "pw-canary" not in repr(sec)
    sec.check_endpoints(("https://a:2379",))
    with pytest.raises(SecurityError, match="need https"):
        sec.check_endpoints(("http://a:2379",))
    with pytest.raises(SecurityError, match="mix"):
        EtcdSecurity().check_endpoints(("http://a", "https://b"))
    bad = [
        ({"ca": str(tmp_path / "nope")}, {}, "cannot read"),
        ({"ca": str(tmp_path)}, {}, "cannot read"),
        ({"cert": str(pem)}, {}, "go together"),
        ({"user": "u"}, {}, "HOLDFAST_ETCD_PASSWORD"),
        ({}, {"HOLDFAST_ETCD_PASSWORD": "p"}, "--etcd-user is not"),
    ]
    (tmp_path / "plain.txt").write_text("hello")
    bad.append(({"ca": str(tmp_path / "plain.txt")}, {}, "not a PEM"))
    for flags, environ, error in bad:
        args = {"ca": None, "cert": None, "key": None, "user": None, "server_name": None}
        with pytest.raises(SecurityError, match=error):
            load_etcd_security(**{**args, **flags}, environ=environ)


def test_sidecar_ids_carry_the_agent_prefix_under_etcd_auth() -> None:
    auth = EtcdSecurity(user="holdfast-dev-sidecar-support", password="p")
    assert SidecarSettings(agent="support").effective_sidecar_id.startswith("support.")
    SidecarSettings(agent="support", sidecar_id="support.a", etcd_security=auth)
    with pytest.raises(SidecarSettingsError, match=r"must start with 'support\.'"):
        SidecarSettings(agent="support", sidecar_id="host-1", etcd_security=auth)


def test_role_layout_and_script() -> None:
    principals = {p.name: p for p in etcd_roles.layout("prod", ["support", "support"])}
    assert set(principals) == {"holdfast-prod-configsvc", "holdfast-prod-sidecar-support"}
    side = {(g.access, g.prefix) for g in principals["holdfast-prod-sidecar-support"].grants}
    assert ("readwrite", "/holdfast/prod/pins/support/") in side
    assert ("readwrite", "/holdfast/prod/health/support.") in side
    assert ("read", "/holdfast/prod/") in side
    assert not any(a == "readwrite" and p == "/holdfast/prod/" for a, p in side)
    script = etcd_roles.script("prod", ["support"], users=True, enable=True)
    assert "etcdctl role grant-permission --prefix holdfast-prod-configsvc readwrite" in script
    assert "etcdctl auth enable" in script and "--interactive=false" not in script
    steps = etcd_roles.steps("prod", ["support"], users=True, enable=False)
    assert all(s.password_of == "" or "--interactive=false" in s.argv for s in steps)
