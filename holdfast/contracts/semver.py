"""Contract versions: ``MAJOR.MINOR.PATCH`` (SemVer 2.0 core, no pre-release or build tags).

Parsing, ordering and bumping are the ``semver`` library's; this module only narrows it to
what a contract key may hold: the three numbers, no pre-release or build part, no leading
zeros, each number at most six digits (keys stay short and bounded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from semver import Version

Bump = Literal["major", "minor", "patch"]
FIRST: Final = "1.0.0"
MAX_PART: Final = 999_999


class VersionError(ValueError):
    """Not a contract version."""


def _version(version: str) -> Version:
    try:
        parsed = Version.parse(version)
    except (ValueError, TypeError) as exc:
        raise VersionError(
            f"invalid contract version {version!r:.40}: use MAJOR.MINOR.PATCH"
        ) from exc
    if parsed.prerelease is not None or parsed.build is not None:
        raise VersionError(
            f"invalid contract version {version!r:.40}: no pre-release or build part"
        )
    if max(parsed.major, parsed.minor, parsed.patch) > MAX_PART:
        raise VersionError(f"invalid contract version {version!r:.40}: a part over {MAX_PART}")
    return parsed


def parse(version: str) -> tuple[int, int, int]:
    parsed = _version(version)
    return parsed.major, parsed.minor, parsed.patch


def is_version(version: str) -> bool:
    try:
        _version(version)
    except VersionError:
        return False
    return True


def bump(version: str, kind: Bump) -> str:
    parsed = _version(version)
    if kind == "major":
        return str(parsed.bump_major())
    if kind == "minor":
        return str(parsed.bump_minor())
    return str(parsed.bump_patch())


def latest(versions: Iterable[str]) -> str | None:
    """The highest valid version, ignoring anything that is not one."""
    valid = ordered(versions)
    return valid[-1] if valid else None


def ordered(versions: Iterable[str]) -> list[str]:
    return sorted((v for v in versions if is_version(v)), key=_version)
