"""The docs stay in step with the programs.

- docs/hooks/cli_reference.py renders the CLI reference from the argparse parsers at every docs
  build: every holdfastctl command and sub-command gets a section, every option of a command
  appears in its section, and the other two programs' pages list every option.
- Hand-written tables that must cover the code do: every sidecar and fake-upstream flag, every
  error code of the sidecar's and configsvc's error tables.
- Every command line in a ``sh`` block of README.md or docs/ that runs holdfastctl,
  holdfast-sidecar or holdfast-fakellm parses with the real parser, so a renamed or removed
  option fails here instead of in a reader's shell.

The parsers are walked here independently of the hook, through argparse's own sub-parser
actions, so a command the hook skipped is caught.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import cast

import pytest

from configsvc.cli.main import build_parser as holdfastctl_parser
from configsvc.errors import ERROR_TABLE as CONFIGSVC_ERRORS
from holdfast_devtools.fakellm.cli import _parser as fakellm_parser
from sidecar.errors import ERROR_TABLE as SIDECAR_ERRORS
from sidecar.settings.cli import build_parser as sidecar_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
HOOK = DOCS / "hooks" / "cli_reference.py"
PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "holdfastctl": holdfastctl_parser,
    "holdfast-sidecar": sidecar_parser,
    "holdfast-fakellm": fakellm_parser,
}


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_cli_reference", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


HOOK_MODULE = load_hook()


def rendered_pages() -> dict[str, str]:
    return cast(dict[str, str], HOOK_MODULE.pages())


def rendered(program: str) -> str:
    for prog in HOOK_MODULE.PROGRAMS:
        if prog.name == program:
            return rendered_pages()[cast(str, prog.page)]
    raise AssertionError(f"the hook renders no page for {program}")


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command below ``parser`` (nouns and verbs alike), with its path of names."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from commands(child, (*path, name))


def is_leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def own_options(
    parser: argparse.ArgumentParser, skip: frozenset[str] = frozenset()
) -> list[argparse.Action]:
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and not (a.option_strings and set(a.option_strings) <= skip)
    ]


def mentions(text: str, option: str) -> bool:
    """``option`` starts a code span in ``text`` (``--etcd`` must not count for ``--etcd-ca``)."""
    return re.search(r"`" + re.escape(option) + r"[` ,=]", text) is not None


HEADING = re.compile(r"^(#{2,4}) `(holdfastctl[^`]*)`$", re.M)


def sections(page: str) -> dict[str, str]:
    """Each command heading of a rendered page and the text up to the next heading."""
    found = list(HEADING.finditer(page))
    out = {}
    for i, match in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(page)
        out[match.group(2)] = page[match.end() : end]
    return out


# -- the generated CLI reference ----------------------------------------------------------------


def test_every_holdfastctl_command_has_exactly_one_section() -> None:
    expected = {" ".join(("holdfastctl", *path)) for path, _ in commands(holdfastctl_parser(), ())}
    headings = [m.group(2) for m in HEADING.finditer(rendered("holdfastctl"))]
    assert len(expected) > 60  # the walk itself found the commands
    assert sorted(headings) == sorted(expected)


def test_every_option_of_every_holdfastctl_command_is_in_its_section() -> None:
    root = holdfastctl_parser()
    globals_ = frozenset(s for a in own_options(root) for s in a.option_strings)
    page = sections(rendered("holdfastctl"))
    missing = []
    for path, parser in commands(root, ()):
        if not is_leaf(parser):
            continue
        name = " ".join(("holdfastctl", *path))
        for action in own_options(parser, skip=globals_):
            if action.option_strings:
                missing += [
                    f"{name} {s}"
                    for s in action.option_strings
                    if not mentions(page.get(name, ""), s)
                ]
            elif str(action.metavar or action.dest) not in page.get(name, ""):
                missing.append(f"{name} <{action.dest}>")
    assert missing == []


def test_global_options_are_listed_once_not_per_command() -> None:
    page = rendered("holdfastctl")
    globals_ = [s for a in own_options(holdfastctl_parser()) for s in a.option_strings]
    head, _, rest = page.partition("## Commands")
    assert all(mentions(head, s) for s in globals_)
    assert not any(mentions(rest, s) for s in ("--server", "--actor"))


@pytest.mark.parametrize("program", ["holdfast-sidecar", "holdfast-fakellm"])
def test_single_command_programs_list_every_option(program: str) -> None:
    page = rendered(program)
    options = [s for a in own_options(PARSERS[program]()) for s in a.option_strings]
    assert options
    assert [s for s in options if not mentions(page, s)] == []


def test_generated_pages_are_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text()
    assert "docs/hooks/cli_reference.py" in nav
    assert all(page in nav for page in rendered_pages())


# -- hand-written tables that must cover the code ------------------------------------------------


@pytest.mark.parametrize(
    ("program", "page"),
    [
        ("holdfast-sidecar", "reference/sidecar-flags.md"),
        ("holdfast-fakellm", "reference/fake-upstream.md"),
    ],
)
def test_reference_tables_describe_every_flag(program: str, page: str) -> None:
    text = (DOCS / page).read_text()
    options = [a.option_strings[-1] for a in own_options(PARSERS[program]()) if a.option_strings]
    assert [s for s in options if not mentions(text, s)] == []


def error_rows(section: str) -> set[tuple[str, str]]:
    """(status, code) of every row of the errors page's table under ``## section``."""
    text = (DOCS / "reference" / "errors.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", body, re.M)
    return set(rows)


@pytest.mark.parametrize(
    ("section", "table"),
    [("Sidecar", SIDECAR_ERRORS), ("configsvc", CONFIGSVC_ERRORS)],
)
def test_errors_page_lists_every_error_code(section: str, table: dict[type, object]) -> None:
    documented = error_rows(section)
    specs = {(str(spec.status), spec.code) for spec in table.values()}  # type: ignore[attr-defined]
    assert len(specs) > 15
    assert sorted(specs - documented) == []


# -- pasteable examples ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Example:
    where: str
    argv: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # written by here-documents earlier in the same block


PROGRAM_LINE = re.compile(
    r"^\s*(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(holdfastctl|holdfast-sidecar|holdfast-fakellm)(\s|$)"
)
SUBSTITUTION = re.compile(r"\$\([^()]*\)")
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
WRITES = re.compile(r"^\s*cat\s*>\s*([\w./-]+)\s*<<")
OPERATORS = frozenset({"|", "||", "&", "&&", ";", ">", ">>", "<", ">&", "<&", "(", ")"})


def shell_blocks(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, lines) of every ``sh`` fenced block; indented blocks too."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(sh|bash|shell)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        indent, start, body = len(fence.group(1)), i + 2, []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        yield start, body
        i += 1


def logical_lines(body: list[str], first: int) -> Iterator[tuple[int, str, str]]:
    """(line number, line, here-document body) with continuation lines joined."""
    i = 0
    while i < len(body):
        number, line, document = first + i, body[i], []
        while line.endswith("\\") and i + 1 < len(body):
            i += 1
            line = line[:-1] + " " + body[i]
        i += 1
        heredoc = HEREDOC.search(line)
        if heredoc:
            while i < len(body) and body[i].strip() != heredoc.group(1):
                document.append(body[i])
                i += 1
            i += 1
        yield number, line, "\n".join(document)


def command_argv(line: str) -> tuple[str, ...]:
    """The words of the first simple command on ``line``, without leading assignments."""
    lexer = shlex.shlex(SUBSTITUTION.sub("SUBSTITUTED", line), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word in OPERATORS or set(word) <= set("|&;<>()"):
            break
        words.append(word)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words.pop(0)
    return tuple(words)


def examples() -> Iterator[Example]:
    for path in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]:
        for first, body in shell_blocks(path.read_text()):
            files: dict[str, str] = {}
            for number, line, document in logical_lines(body, first):
                written = WRITES.match(line)
                if written and not written.group(1).startswith("/"):
                    files[written.group(1)] = document
                if PROGRAM_LINE.match(line):
                    where = f"{path.relative_to(ROOT)}:{number}"
                    yield Example(where, command_argv(line), tuple(files.items()))


EXAMPLES = list(examples())


def test_the_docs_have_examples_of_every_program() -> None:
    assert {e.argv[0] for e in EXAMPLES} == set(PARSERS)
    assert len(EXAMPLES) > 50


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_example_parses(example: Example, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Options that read a file read it while parsing: give them what the example wrote.
    monkeypatch.chdir(tmp_path)
    for name, content in example.files:
        (tmp_path / name).write_text(content)
    parser = PARSERS[example.argv[0]]()
    errors = io.StringIO()
    refused = False
    with contextlib.redirect_stderr(errors):
        try:
            parser.parse_args(list(example.argv[1:]))
        except SystemExit:
            refused = True
    assert not refused, f"{' '.join(example.argv)}\n{errors.getvalue()}"
