"""holdfastctl argument parsing and configsvc settings: pure, no event loop, no server."""

from __future__ import annotations

import pytest

from configsvc.cli import main as cli
from configsvc.cli.client import Client, Refused, Unreachable
from configsvc.cli.settings import DEFAULT_SERVER, ClientSettings, load_client_settings
from configsvc.server.settings import MAX_BODY_BYTES, ServeSettings, load_serve_settings
from configsvc.settings import SettingsError
from holdfast.options.common import DEFAULT_ETCD


def serve(environ: dict[str, str], **kw: object) -> ServeSettings:
    args: dict[str, object] = {
        "listen": None,
        "etcd": None,
        "env": None,
        "token": None,
        "allow_no_token": False,
    }
    args.update(kw)
    return load_serve_settings(environ=environ, **args)  # type: ignore[arg-type]


def test_serve_defaults_and_environment() -> None:
    s = serve({"HOLDFAST_TOKEN": "t0k"})
    assert (s.listen_host, s.listen_port, s.etcd_endpoints, s.env) == (
        "127.0.0.1",
        8700,
        (DEFAULT_ETCD,),
        "dev",
    )
    assert s.max_body_bytes == MAX_BODY_BYTES == 64 * 1024
    s = serve(
        {"HOLDFAST_TOKEN": "t0k", "HOLDFAST_ETCD": "http://a:1, http://b:2", "HOLDFAST_ENV": "stg"}
    )
    assert (s.etcd_endpoints, s.env) == (("http://a:1", "http://b:2"), "stg")
    s = serve({"HOLDFAST_ENV": "stg"}, token="flag", env="prod", listen="127.0.0.1:0")
    assert (s.token, s.env, s.listen_port) == ("flag", "prod", 0)
    assert "flag" not in repr(s)


def test_serve_refuses_to_start_without_a_token() -> None:
    with pytest.raises(SettingsError, match="no token"):
        serve({})
    with pytest.raises(SettingsError, match="no token"):
        serve({"HOLDFAST_TOKEN": "   "})
    assert not serve({}, allow_no_token=True).auth_required
    with pytest.raises(SettingsError, match="only for a loopback listener"):
        serve({}, allow_no_token=True, listen="0.0.0.0:8700")


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"listen": "8700"}, "HOST:PORT"),
        ({"listen": "127.0.0.1:http"}, "not a number"),
        ({"listen": "127.0.0.1:70000"}, "out of range"),
        ({"etcd": " , "}, "at least one endpoint"),
        ({"env": "Prod"}, "invalid environment"),
    ],
)
def test_serve_settings_errors(kw: dict[str, str], needle: str) -> None:
    with pytest.raises(SettingsError, match=needle):
        serve({"HOLDFAST_TOKEN": "t"}, **kw)


def test_client_settings() -> None:
    s = load_client_settings(
        server=None, token=None, actor=None, json_output=False, timeout=None, environ={}
    )
    assert (s.server, s.token, s.actor) == (DEFAULT_SERVER, "", "unknown")
    env = {"HOLDFAST_SERVER": "http://h:1/", "HOLDFAST_TOKEN": "sekrit-tok", "USER": "alice"}
    s = load_client_settings(
        server=None, token=None, actor=None, json_output=True, timeout=2.0, environ=env
    )
    assert (s.server, s.token, s.actor, s.json_output) == (
        "http://h:1",
        "sekrit-tok",
        "alice",
        True,
    )
    s = load_client_settings(
        server=None, token=None, actor=None, json_output=False, timeout=None,
        environ={**env, "HOLDFAST_ACTOR": "ops-bot"},
    )  # fmt: skip
    assert s.actor == "ops-bot"
    assert "sekrit" not in repr(s)
    for bad in ({"server": "h:1"}, {"actor": "two words"}, {"timeout": 0.0}):
        with pytest.raises(SettingsError):
            ClientSettings(**bad)


def test_global_options_work_before_and_after_the_noun() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["--json", "--server", "http://x:1", "route", "show", "support"])
    after = parser.parse_args(["route", "show", "support", "--json", "--server", "http://x:1"])
    for args in (before, after):
        assert (args.json, args.server, args.agent) == (True, "http://x:1", "support")
        assert args.func is cli.route_show
    plain = parser.parse_args(["route", "show", "support"])
    assert (plain.json, plain.server, plain.token) == (False, None, None)


def test_command_arguments() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(
        ["route", "set-stable", "support", "r2", "--reason", "go", "--if-revision", "12"]
    )
    assert (args.agent, args.release, args.reason, args.if_revision) == ("support", "r2", "go", 12)
    args = parser.parse_args(["release", "create", "a", "r", "--model", "m", "--base-url", "u"])
    assert (args.api_key_env, args.description, args.reason) == ("", "", "")
    args = parser.parse_args(["history", "--agent", "support", "--limit", "3"])
    assert (args.agent, args.limit) == ("support", 3)
    args = parser.parse_args(["serve", "--listen", "127.0.0.1:0", "--allow-no-token"])
    assert (args.listen, args.allow_no_token, args.func) == ("127.0.0.1:0", True, None)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["release"],
        ["release", "create", "a", "r"],  # --model and --base-url are required
        ["route", "set-stable", "a"],
        ["route", "set-stable", "a", "r", "--if-revision", "-1"],
        ["route", "aliases", "a"],  # neither names nor --clear
        ["route", "aliases", "a", "x", "--clear"],
        ["history", "--limit", "0"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == cli.EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


def test_bad_server_url_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--server", "localhost:8700", "route", "show", "a"]) == cli.EXIT_USAGE
    assert "need http(s)://host" in capsys.readouterr().err


def test_client_decodes_errors_and_foreign_answers() -> None:
    client = Client(ClientSettings(server="http://127.0.0.1:1"))
    with pytest.raises(Refused) as refused:
        client._decode(409, b'{"error": {"message": "nope", "type": "t", "code": "c"}}')
    assert (refused.value.status, refused.value.message) == (409, "nope")
    assert client._decode(200, b'{"ok": true}') == {"ok": True}
    with pytest.raises(Unreachable, match="not configsvc's JSON"):
        client._decode(502, b"<html>bad gateway</html>")


def test_the_consoles_secret_and_sampling_interval() -> None:
    env = {"HOLDFAST_TOKEN": "t0k"}
    first, second = serve(env), serve(env)
    assert len(first.console_secret) == 32 and first.console_secret != second.console_secret
    shared = {**env, "HOLDFAST_CONSOLE_SECRET": "s" * 40}
    assert serve(shared).console_secret == serve(shared).console_secret == b"s" * 40
    assert "s" * 40 not in repr(serve(shared))
    with pytest.raises(SettingsError, match="HOLDFAST_CONSOLE_SECRET"):
        serve({**env, "HOLDFAST_CONSOLE_SECRET": "too short"})
    assert serve(env).console_interval == 5.0
    assert serve(env, console_interval=1.0).console_interval == 1.0
    for bad in (0.1, 301.0):
        with pytest.raises(SettingsError, match="--console-interval"):
            serve(env, console_interval=bad)
    args = cli.build_parser().parse_args(["serve", "--console-interval", "2"])
    assert args.console_interval == 2.0
