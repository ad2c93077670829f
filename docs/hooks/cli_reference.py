"""MkDocs hook: the command-line reference pages, rendered from the programs' own argparse parsers.

The pages never exist on disk. Every build walks ``holdfastctl``'s, ``holdfast-sidecar``'s and
``holdfast-fakellm``'s parsers and renders each command, sub-command, argument, default and help
text, so the reference cannot drift from the code. ``mkdocs.yml`` names this file under
``hooks:``; tests/unit/test_docs_cli_reference.py checks that the rendering covers every
sub-command and option.

The rendering is plain functions of a parser (no MkDocs import), so the test can call them
without building the site.
"""

from __future__ import annotations

import argparse
import importlib
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    """One console script whose parser is rendered as one page."""

    name: str
    module: str
    factory: str
    page: str
    intro: str

    def parser(self) -> argparse.ArgumentParser:
        build: Callable[[], argparse.ArgumentParser] = getattr(
            importlib.import_module(self.module), self.factory
        )
        return build()


PROGRAMS: tuple[Program, ...] = (
    Program(
        name="holdfastctl",
        module="configsvc.cli.main",
        factory="build_parser",
        page="operating/cli/holdfastctl.md",
        intro=(
            "The operators' command line: `holdfastctl serve` runs configsvc, every other "
            "command talks to it over HTTP. How the commands fit together, the exit codes and "
            "the global options are explained in [Using holdfastctl](index.md)."
        ),
    ),
    Program(
        name="holdfast-sidecar",
        module="sidecar.settings.cli",
        factory="build_parser",
        page="operating/cli/holdfast-sidecar.md",
        intro=(
            "One sidecar per agent process. What each flag means, with its environment "
            "variable, is in [Sidecar flags](../../reference/sidecar-flags.md)."
        ),
    ),
    Program(
        name="holdfast-fakellm",
        module="holdfast_devtools.fakellm.cli",
        factory="_parser",
        page="operating/cli/holdfast-fakellm.md",
        intro=(
            "The deterministic OpenAI-compatible upstream used by the tests, the demo and the "
            "benchmarks (the `holdfast-devtools` distribution). Its behaviour and control API "
            "are described in [The fake upstream](../../reference/fake-upstream.md)."
        ),
    ),
)

SYNOPSIS_WIDTH = 96
# argparse's two default groups read as one table; any other group gets its own, under its title
DEFAULT_GROUPS = frozenset({"positional arguments", "options", "optional arguments"})

GENERATED_NOTE = (
    '!!! note "Generated"\n'
    "    This page is rendered from the program's argparse parser at every docs build; "
    "`--help` on the command line shows the same.\n"
)


def subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """The parser's direct sub-commands, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def _help_of(parser: argparse.ArgumentParser, name: str) -> str:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if choice.dest == name and choice.help:
                    return str(choice.help)
    return ""


def _escape(text: str) -> str:
    """Text for a Markdown table cell: no raw HTML, no column break, no stray emphasis."""
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("|", "\\|")
        .replace("*", "\\*")
        .replace("\n", " ")
    )


def _code(text: str) -> str:
    """An inline code span (Python-Markdown's tables do not split a row at a `|` inside one)."""
    return f"`{text}`"


def _metavar(prog: str, action: argparse.Action) -> str:
    formatter = argparse.HelpFormatter(prog)
    if action.option_strings:
        default = formatter._get_default_metavar_for_optional(action)
    else:
        default = formatter._get_default_metavar_for_positional(action)
    return formatter._format_args(action, default)


def _usage_term(prog: str, action: argparse.Action) -> str:
    if not action.option_strings:
        return _metavar(prog, action)
    flag = action.option_strings[-1] if len(action.option_strings) > 1 else action.option_strings[0]
    term = flag if action.nargs == 0 else f"{flag} {_metavar(prog, action)}"
    return term if action.required else f"[{term}]"


def _help_text(prog: str, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    return str(argparse.HelpFormatter(prog)._expand_help(action))


def _default(action: argparse.Action) -> str:
    default = action.default
    if action.required or (
        not action.option_strings and action.nargs in ("*", "?") and not default
    ):
        return ""
    if default is None or default == argparse.SUPPRESS or action.nargs == 0:
        return ""
    if isinstance(default, list | tuple) and not default:
        return ""
    if default == "":
        return '`""`'
    return _code(str(default))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Context:
    program: str
    skipped: frozenset[str]  # option strings documented once, as global options


def _own_actions(parser: argparse.ArgumentParser, ctx: _Context) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and not (a.option_strings and set(a.option_strings) <= ctx.skipped)
    ]


def _group_title(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    for group in parser._action_groups:
        if action in group._group_actions:
            return group.title or ""
    return ""


def _options_table(prog: str, actions: list[argparse.Action]) -> list[str]:
    rows = ["| argument | default | help |", "|---|---|---|"]
    for action in actions:
        if action.option_strings:
            names = ", ".join(action.option_strings)
            if action.nargs != 0:
                names += " " + _metavar(prog, action)
        else:
            names = _metavar(prog, action)
        notes = []
        if action.required and action.option_strings:
            notes.append("**required**")
        if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
            notes.append("one of " + ", ".join(_code(str(c)) for c in action.choices))
        help_text = _escape(_help_text(prog, action))
        many = action.nargs in (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE)
        if (many or isinstance(action, argparse._AppendAction)) and "repeatable" not in help_text:
            notes.append("repeatable")
        cell = "; ".join(x for x in (help_text, *notes) if x)
        rows.append(f"| {_code(names)} | {_default(action)} | {cell} |")
    return rows


def _synopsis(
    parser: argparse.ArgumentParser, actions: list[argparse.Action], ctx: _Context
) -> str:
    terms = [parser.prog]
    if ctx.skipped:
        terms.append("[global options]")
    optionals = [_usage_term(parser.prog, a) for a in actions if a.option_strings]
    positionals = [_usage_term(parser.prog, a) for a in actions if not a.option_strings]
    if any(True for _ in subcommands(parser)):
        positionals.append("COMMAND ...")
    return "\n".join(
        textwrap.wrap(
            " ".join([*terms, *positionals, *optionals]),
            width=SYNOPSIS_WIDTH,
            subsequent_indent="    ",
            break_long_words=False,
            break_on_hyphens=False,
        )
    )


def render_command(
    parser: argparse.ArgumentParser, *, level: int, ctx: _Context, help_text: str = ""
) -> list[str]:
    """One command's section, and its sub-commands' sections below it."""
    out = [f"{'#' * level} `{parser.prog}`", ""]
    description = parser.description or help_text
    if description:
        out += [_escape(description), ""]
    actions = _own_actions(parser, ctx)
    children = list(subcommands(parser))
    if not children or actions:
        out += ["```text", _synopsis(parser, actions, ctx), "```", ""]
    plain = [a for a in actions if _group_title(parser, a) in DEFAULT_GROUPS]
    if plain:
        out += [*_options_table(parser.prog, plain), ""]
    for group in parser._action_groups:
        if group.title in DEFAULT_GROUPS:
            continue
        grouped = [a for a in group._group_actions if a in actions]
        if grouped:
            out += [f"*{_escape(group.title or '')}*", ""]
            out += [*_options_table(parser.prog, grouped), ""]
    for group in parser._mutually_exclusive_groups:
        names = [a.option_strings[0] if a.option_strings else a.dest for a in group._group_actions]
        kind = "exactly one" if group.required else "at most one"
        out += [f"Mutually exclusive ({kind}): " + ", ".join(_code(n) for n in names), ""]
    if parser.epilog:
        out += [_escape(parser.epilog), ""]
    for name, child in children:
        out += render_command(
            child, level=min(level + 1, 4), ctx=ctx, help_text=_help_of(parser, name)
        )
    return out


def render_program(program: Program, parser: argparse.ArgumentParser | None = None) -> str:
    """The whole Markdown page of one program."""
    parser = parser or program.parser()
    children = list(subcommands(parser))
    lines = [f"# {program.name}", "", program.intro, "", GENERATED_NOTE]
    if not children:
        ctx = _Context(program=program.name, skipped=frozenset())
        body = render_command(parser, level=2, ctx=ctx)
        return "\n".join([*lines, *body[2:]]).rstrip() + "\n"
    globals_ = _own_actions(parser, _Context(program=program.name, skipped=frozenset()))
    skipped = frozenset(s for a in globals_ for s in a.option_strings)
    ctx = _Context(program=program.name, skipped=skipped)
    lines += [
        "## Global options",
        "",
        f"Accepted before the command or after it (`{program.name} --json route show support` "
        f"and `{program.name} route show support --json` are the same).",
        "",
        *_options_table(parser.prog, globals_),
        "",
        "## Commands",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for name, child in children:
        anchor = child.prog.replace(" ", "-").lower()
        summary = _escape(_help_of(parser, name) or child.description or "")
        lines.append(f"| [`{name}`](#{anchor}) | {summary} |")
    lines.append("")
    for name, child in children:
        lines += render_command(child, level=2, ctx=ctx, help_text=_help_of(parser, name))
    return "\n".join(lines).rstrip() + "\n"


def pages() -> dict[str, str]:
    """Every generated page: its path under docs/ and its Markdown."""
    return {program.page: render_program(program) for program in PROGRAMS}


# -- MkDocs events --------------------------------------------------------------------------------


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    from mkdocs.structure.files import File

    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
