"""The fuzz tier: reproducible Hypothesis runs (per-input bounds: tests/fuzz/bounds.py).

Profiles: ``ci`` (the default, everywhere) is derandomized -- the same examples on every run,
so a red build is reproducible and a green one is not luck -- and keeps no example database;
the committed corpus (tests/fuzz/corpus/) replays known tricky inputs on top. ``explore``
(``HYPOTHESIS_PROFILE=explore``) draws fresh random examples on every run, for a local hunt;
anything it finds belongs in the corpus.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_ENV = "HYPOTHESIS_PROFILE"
COMMON = {"database": None, "deadline": 500, "suppress_health_check": [HealthCheck.too_slow]}

settings.register_profile("ci", derandomize=True, **COMMON)  # type: ignore[arg-type]
settings.register_profile("explore", derandomize=False, **COMMON)  # type: ignore[arg-type]
settings.load_profile(os.environ.get(PROFILE_ENV, "ci"))
