"""The alphabets of names and ids, apart from the records so that the CLI can check them cheaply.

``holdfast.keyspace.keys`` builds keys from these; importing this module loads nothing else.
"""

from __future__ import annotations

import re
from typing import Final

DEFAULT_ENV: Final = "dev"

# Names end up inside etcd keys, URLs and Prometheus labels; one conservative alphabet for all.
NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
# Sessions and sidecar ids come from agents and hosts: wider alphabet, still no "/".
ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
# Flag keys follow flagd files (camelCase is common there): no "/", 1-128 characters.
FLAG_KEY_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class KeyError_(ValueError):
    """A name or key that does not fit the keyspace."""


def validate_name(value: str, *, what: str) -> str:
    if not NAME_RE.fullmatch(value):
        raise KeyError_(
            f"invalid {what} {value!r}: use 1-63 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def validate_id(value: str, *, what: str) -> str:
    if not ID_RE.fullmatch(value):
        raise KeyError_(
            f"invalid {what} {value!r}: use 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', "
            "'@' or '-', starting with a letter or digit"
        )
    return value
