"""Contract versions: ``MAJOR.MINOR.PATCH`` (SemVer 2.0 core, no pre-release or build tags)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, Literal

Bump = Literal["major", "minor", "patch"]
FIRST: Final = "1.0.0"
_VERSION_RE: Final = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$")


class VersionError(ValueError):
    """Not a contract version."""


def parse(version: str) -> tuple[int, int, int]:
    match = _VERSION_RE.fullmatch(version)
    if match is None:
        raise VersionError(f"invalid contract version {version!r:.40}: use MAJOR.MINOR.PATCH")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


def is_version(version: str) -> bool:
    return _VERSION_RE.fullmatch(version) is not None


def bump(version: str, kind: Bump) -> str:
    major, minor, patch = parse(version)
    if kind == "major":
        return f"{major + 1}.0.0"
    if kind == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def latest(versions: Iterable[str]) -> str | None:
    """The highest valid version, ignoring anything that is not one."""
    valid = [v for v in versions if is_version(v)]
    return max(valid, key=parse) if valid else None


def ordered(versions: Iterable[str]) -> list[str]:
    return sorted((v for v in versions if is_version(v)), key=parse)
