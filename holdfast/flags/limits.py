"""Size limits of a flag file, apart from the validator so that the CLI checks them cheaply."""

from __future__ import annotations

from typing import Final

MAX_FILE_BYTES: Final = 1 << 20
