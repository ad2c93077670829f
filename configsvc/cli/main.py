"""``holdfastctl``: run the config service (``serve``) or operate it (``<noun> <verb>``).

Exit codes: 0 ok; 1 configsvc refused (its message on stderr); 2 usage error; 3 configsvc
unreachable (or it did not answer in time).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Final

from configsvc.cli import budgets as cli_budgets
from configsvc.cli import categories as cli_categories
from configsvc.cli import contracts as cli_contracts
from configsvc.cli import experiments as cli_experiments
from configsvc.cli import flags as cli_flags
from configsvc.cli import prompts as cli_prompts
from configsvc.cli import rollout as cli_rollout
from configsvc.cli import status as cli_status
from configsvc.cli import traffic as cli_traffic
from configsvc.cli.client import Client, Refused, Unreachable
from configsvc.cli.commands import Command, provider_change_option
from configsvc.cli.etcd_roles import etcd_roles_main, register_etcd_roles
from configsvc.cli.render import tables as render
from configsvc.cli.serve import register_serve, serve_main
from configsvc.cli.settings import ENV_ACTOR, ENV_SERVER, load_client_settings
from configsvc.limits import MAX_HISTORY_LIMIT
from configsvc.settings import ENV_TOKEN, SettingsError

PROG: Final = "holdfastctl"
EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 3


def _limit(text: str) -> int:
    try:
        number = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if not 1 <= number <= MAX_HISTORY_LIMIT:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_HISTORY_LIMIT}")
    return number


def _revision(text: str) -> int:
    try:
        number = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return number


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Global options; on sub-commands too (suppressed defaults), so they work in any position."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--server",
        default=default(None),
        help=f"configsvc URL (${ENV_SERVER}, default http://127.0.0.1:8700)",
    )
    parser.add_argument("--token", default=default(None), help=f"API token (${ENV_TOKEN})")
    parser.add_argument(
        "--actor",
        default=default(None),
        help=f"name recorded in the audit trail (${ENV_ACTOR}, default $USER)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="print the API's JSON instead of a table",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(None),
        help="seconds to wait for configsvc (default 30)",
    )


# -- commands: each returns (the API's JSON body, its human rendering) -------------------------


def release_create(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    fields = {
        "release": a.release,
        "model": a.model,
        "base_url": a.base_url,
        "api_key_env": a.api_key_env,
        "description": a.description,
        "reason": a.reason,
        "provider": a.provider,
    }
    if a.api_version:
        fields["api_version"] = a.api_version
    if a.contract or a.contract_policy:
        fields["contracts"] = dict(a.contract)
        fields["contract_policy"] = a.contract_policy
    if a.prompt:
        fields["prompts"] = dict(a.prompt)
    if a.mcp:
        fields["mcp"] = cli_contracts.mcp_toolsets(a.mcp)
    if a.embedding_model or a.index_version:
        fields["embedding_model"] = a.embedding_model
        fields["index_version"] = a.index_version
    body = c.create_release(a.agent, fields)
    return body, render.release_created(body)


def release_list(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.list_releases(a.agent)
    return body, render.releases(body)


def release_show(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.show_release(a.agent, a.release)
    return body, render.release(body)


def route_show(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.show_route(a.agent)
    rules = cli_categories.rules_text(body["route"])
    return body, render.route(body) + (f"\n{rules}" if rules else "")


def route_set_stable(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.set_stable(a.agent, a.release, a.reason, a.if_revision, a.allow_provider_change)
    return body, render.route_change("set-stable", body)


def route_rollback(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.rollback(a.agent, a.reason)
    return body, render.route_change("rollback", body)


def route_aliases(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.set_aliases(a.agent, list(a.names), a.reason)
    return body, render.route_change("aliases", body)


def history(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.history(a.agent, a.limit)
    return body, render.history(body)


def leaf(parent: Any, name: str, func: Command | None, help_text: str) -> Any:
    """One runnable sub-command; it accepts the global options in any position too."""
    sp = parent.add_parser(name, help=help_text, description=help_text)
    _global_options(sp, suppress=True)
    sp.set_defaults(func=func)
    return sp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Operate Holdfast's config service.")
    _global_options(p, suppress=False)
    nouns = p.add_subparsers(dest="noun", required=True, metavar="COMMAND")

    register_serve(nouns, leaf)

    release = nouns.add_parser("release", help="immutable release bundles").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(release, "create", release_create, "create a release (immutable once created)")
    sp.add_argument("agent")
    sp.add_argument("release")
    sp.add_argument("--model", required=True)
    sp.add_argument("--base-url", required=True, help="provider base URL, e.g. https://host/v1")
    sp.add_argument("--api-key-env", default="", help="env var holding the provider key")
    sp.add_argument(
        "--provider",
        choices=("openai", "anthropic"),
        default="openai",
        help="the provider's API: openai (Authorization: Bearer; chat completions, embeddings)"
        " or anthropic (x-api-key; Messages)",
    )
    sp.add_argument(
        "--api-version",
        default="",
        metavar="V",
        help="anthropic: the anthropic-version the sidecar sends when the agent sends none "
        "(default 2023-06-01)",
    )
    sp.add_argument("--description", default="")
    sp.add_argument("--reason", default="")
    sp.add_argument(
        "--embedding-model",
        default="",
        metavar="MODEL",
        help="the model that serves this release's embeddings (none: embeddings are refused)",
    )
    sp.add_argument(
        "--index-version",
        default="",
        metavar="LABEL",
        help="the vector index built with --embedding-model (shown, and returned on embeddings)",
    )
    cli_contracts.release_options(sp)
    cli_prompts.release_options(sp)
    sp = leaf(release, "list", release_list, "list an agent's releases")
    sp.add_argument("agent")
    sp = leaf(release, "show", release_show, "show one release")
    sp.add_argument("agent")
    sp.add_argument("release")

    route = nouns.add_parser("route", help="where an agent's traffic goes").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(route, "show", route_show, "show an agent's route")
    sp.add_argument("agent")
    sp = leaf(route, "set-stable", route_set_stable, "point new sessions at a release")
    sp.add_argument("agent")
    sp.add_argument("release")
    sp.add_argument("--reason", default="")
    sp.add_argument(
        "--if-revision",
        type=_revision,
        default=None,
        metavar="N",
        help="refuse unless the route is still at mod_revision N",
    )
    provider_change_option(sp)
    sp = leaf(route, "rollback", route_rollback, "stable <- previous stable, in one step")
    sp.add_argument("agent")
    sp.add_argument("--reason", default="")
    sp = leaf(route, "aliases", route_aliases, "set the extra model names the agent may use")
    sp.add_argument("agent")
    sp.add_argument("names", nargs="*", metavar="NAME")
    sp.add_argument("--clear", action="store_true", help="remove every alias")
    sp.add_argument("--reason", default="")

    for module in (
        cli_traffic, cli_rollout, cli_flags, cli_budgets, cli_contracts, cli_status,
        cli_prompts, cli_experiments, cli_categories,
    ):  # fmt: skip
        module.register(nouns, leaf)
    register_etcd_roles(nouns, leaf)

    sp = leaf(nouns, "history", history, "audit trail, newest first")
    sp.add_argument("--agent", default=None)
    sp.add_argument("--limit", type=_limit, default=None, help="entries to show (default 50)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.noun == "serve":
        return serve_main(args)
    if args.noun == "etcd-roles":
        return etcd_roles_main(args)
    if args.noun == "route" and args.verb == "aliases" and bool(args.names) == args.clear:
        parser.error("route aliases: give the alias names, or --clear alone to remove them all")
    try:
        settings = load_client_settings(
            server=args.server,
            token=args.token,
            actor=args.actor,
            json_output=args.json,
            timeout=args.timeout,
        )
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        body, human = args.func(Client(settings), args)
    except Refused as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        if settings.json_output:
            print(json.dumps(exc.body, indent=2, sort_keys=True))
        return EXIT_REFUSED
    except Unreachable as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(body, indent=2, sort_keys=True) if settings.json_output else human)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
