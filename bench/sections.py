"""bench/RESULTS.md holds one marked section per benchmark; each tool replaces only its own."""

from __future__ import annotations

from pathlib import Path
from typing import Final

RESULTS: Final = Path(__file__).with_name("RESULTS.md")
TITLE: Final = "# Benchmark results"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(name: str, section: str, path: Path = RESULTS) -> None:
    """Put ``section`` (which carries its own markers) in place of the old one, or append it."""
    start, end = markers(name)
    text = path.read_text() if path.exists() else TITLE + "\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def publish(name: str, section: str) -> int:
    """Print ``section`` and put it in RESULTS.md in place of its old one; a ``main``'s 0."""
    print(section)
    replace_section(name, section)
    return 0
